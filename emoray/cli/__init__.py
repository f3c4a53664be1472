"""`emoray`: the command line door to the annotate job, evaluation, the nightly job, the demo and
the catalogs.

Settings come from a YAML profile (`--config conf/<profile>.yaml`), `EMORAY_*` environment
variables, then command-line flags; every flag maps to one field of
`emoray.config.AnnotateConfig`. Exit codes, for schedulers: 0 ok, 1 unexpected failure,
2 bad configuration, 3 bad input, 4 table locked by another run, 5 quality gate failed (nothing
annotated), 6 partial failure (some output committed; re-running completes it), 7 the engine
could not start (or would not fit in memory; nothing annotated), 8 over the run's budget
(nothing started), 9 the run's budget spent (what was answered is committed; the next run
continues).
"""

from __future__ import annotations

import argparse
import sys

from emoray.cli import annotate, catalog, enrich, gold, lake, tools
from emoray.cli.common import cascade_steps, job_config  # noqa: F401  (for scripts and tests)
from emoray.errors import (  # noqa: F401  (the codes, re-exported for scripts and tests)
    EXIT_BUDGET,
    EXIT_BUDGET_SPENT,
    EXIT_CONFIG,
    EXIT_ENGINE,
    EXIT_FAILED,
    EXIT_GATE,
    EXIT_INPUT,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_PARTIAL,
    EmorayError,
)

COMMANDS = (annotate, gold, tools, enrich, lake, catalog)
"""The modules of the commands, each declaring its own (`add`), in the order --help lists them."""
EXAMPLES = {name: lines for m in COMMANDS for name, lines in m.EXAMPLES.items()}
"""A working example per command, shown by its --help (tests parse every one)."""


def parser() -> argparse.ArgumentParser:
    """The `emoray` parser: one sub-command per command, declared by its module."""
    p = argparse.ArgumentParser(prog="emoray", description=" ".join(
        __doc__.split("\n\n")[0].split()))
    sub = p.add_subparsers(dest="command", required=True)
    for m in COMMANDS:
        m.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command; an `EmorayError` ends it with its message and its own exit code,
    anything else with a traceback (exit 1)."""
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except EmorayError as e:
        print(f"emoray: {e}", file=sys.stderr)
        return e.exit_code

