"""The errors emoray raises on purpose, each naming the exit code a scheduler sees: the CLI maps
an exception to its code by its type alone (`EmorayError.exit_code`); anything else is an
unexpected failure, a traceback and exit 1, never a code that tells the operator to fix their
input."""

from __future__ import annotations

(EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_INPUT, EXIT_LOCKED, EXIT_GATE, EXIT_PARTIAL,
 EXIT_ENGINE, EXIT_BUDGET, EXIT_BUDGET_SPENT) = range(10)


class EmorayError(Exception):
    """An error whose message says what is wrong and what to do; ends the command with
    `exit_code`."""

    exit_code = EXIT_FAILED
