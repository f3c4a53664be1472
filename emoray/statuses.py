"""One status vocabulary: every value of the annotation table's `status` column, the sets of them
that parts of emoray act on (each with its reason), and the one rule for "the latest answer".

- `ok`: the answer parsed; `truncated`: it parsed, from a text cut to fit the model's context;
- `parse_error`: the model's answer does not parse (kept, with the reason, in `error`);
- `failed`: the engine gave no answer for the row (its error in `error`);
- `empty_text`, `invalid_text`: no prompt could be sent (`TEXT_PROBLEMS`).
"""

from __future__ import annotations

TEXT_PROBLEMS = {
    "empty_text": "text is null or blank; no prompt sent",
    "invalid_text": "text is not valid UTF-8; no prompt sent",
}

STATUSES = ("ok", "parse_error", "empty_text", "invalid_text", "truncated", "failed")
"""Every value of the `status` column (`columns.TABLE` names them)."""

USABLE = ("ok", "truncated")
"""Rows whose answer is a label analysts get (parsed): the Spark join, the label report and
the evaluation's metrics read these."""

REUSABLE = (*USABLE, "parse_error")
"""Stored answers a new row with the same text may reuse: greedy decoding would give the same
answer again (a parse error included); `failed` rows are retried; text problems cost nothing
to redo."""

NOT_HELD = ("failed",)
"""Stored rows the next night annotates again for the same doc: the engine gave no answer."""

SETTLED = (*REUSABLE, *TEXT_PROBLEMS)
"""Stored statuses that need no prompt for the same text again: reusable answers, and texts no
prompt can be sent for. A night whose every text and request is settled starts no engine."""

LATEST = (("annotated_at", "descending"), ("run_id", "descending"))
"""The latest answer of several: the newest `annotated_at`, a tie going to the larger `run_id`
(run ids start with their UTC start time). The plan's reuse and the Spark join both follow it."""
