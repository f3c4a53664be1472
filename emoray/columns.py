"""Every column a row carries through the pipeline, once: its Arrow type and what it means.
The annotation table's schema (`SCHEMA`) is built from it; the stage contract refuses a stage
that needs or adds a column not named here (`contract.check`); the plan's input schema takes
its types from here; `emoray stages` prints it under the stage table."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from emoray.statuses import STATUSES


@dataclass(frozen=True)
class Column:
    type: pa.DataType
    description: str
    nullable: bool = True


_S, _F = pa.string(), pa.float64()

TABLE = {
    "doc_id": Column(_S, "the input row's id (its `id_column`)", nullable=False),
    "text_sha256": Column(_S, "SHA-256 of the normalized text: dedup and reuse key on it "
                          "(null for a text that could not be read)"),
    "task": Column(_S, "the task's name (`emoray tasks`)", nullable=False),
    "target": Column(_S, "the emotion a per-emotion task asks about (ei_reg:joy), else null"),
    "score": Column(_F, "a regression or ordinal answer's number (the expected value where "
                    "`expected_score` asks for it)"),
    "label": Column(_S, "a class answer"),
    "labels": Column(pa.list_(_S), "a multi-label answer's emotions"),
    "confidence": Column(_F, "the model's probability of its answer after the calibration "
                         "named in `calibration`"),
    "raw_confidence": Column(_F, "the model's own probability of its answer"),
    "calibration": Column(_S, "the calibration applied (`uncalibrated`: confidence equals "
                          "raw_confidence)"),
    "raw_output": Column(_S, "the model's answer as generated"),
    "status": Column(_S, "one of " + ", ".join(STATUSES) + " (`emoray.statuses`)",
                     nullable=False),
    "error": Column(_S, "why a row is not ok"),
    "model": Column(_S, "the model's identity (a cascade's rows: the cascade's)",
                    nullable=False),
    "prompt_version": Column(_S, "hash of the task's prompt and scoring settings",
                             nullable=False),
    "run_id": Column(_S, "the run that wrote the row", nullable=False),
    "annotated_at": Column(pa.timestamp("us", tz="UTC"), "when the row was answered",
                           nullable=False),
    "decided_by": Column(_S, "a cascade's final row: the model whose answer was final; null "
                         "on a model's own answers"),
}
"""The long annotation table's columns, in order. A table made before a column existed gains
it on the next write (`table.AnnotationTable.create`)."""

PIPELINE = {
    "side": Column(_S, 'where a plan row comes from: "new" (tonight\'s input) or "old" (a '
                   "stored annotation of the same text)"),
    "text": Column(_S, "the normalized text"),
    "text_status": Column(_S, "ok, or why the text sends no prompt (empty_text, invalid_text)"),
    "request": Column(_S, "the task request the input row names (`task_column`), or null: "
                      "every request of the run"),
    "cached_output": Column(_S, "a stored answer for the same text and request, reused in "
                            "place of a prompt"),
    "cached_confidence": Column(_F, "that stored answer's confidence"),
    "cached_score": Column(_F, "that stored answer's score"),
    "cached_status": Column(_S, "that stored answer's status"),
    "doc_ids": Column(pa.list_(_S), "the input rows one prompt answers: its answer is fanned "
                      "out to each"),
    "truncated": Column(pa.bool_(), "the text was cut to fit the model's context"),
    "finish_reason": Column(_S, "why the engine stopped (stop, length)"),
    "prompt_tokens": Column(pa.int64(), "the prompt's length in the model's tokens"),
    "output_tokens": Column(pa.int64(), "tokens generated"),
    "expected_score": Column(_F, "the expected value over the leading digit's distribution "
                             "(`expected_score` tasks)"),
}
"""Columns rows carry between stages that the table does not store."""

COLUMNS = {**TABLE, **PIPELINE}

SCHEMA = pa.schema([pa.field(n, c.type, nullable=c.nullable) for n, c in TABLE.items()])
"""The annotation table's Arrow schema."""


def field(name: str) -> pa.Field:
    """A registered column as an Arrow field."""
    return pa.field(name, COLUMNS[name].type, nullable=COLUMNS[name].nullable)


def render() -> str:
    """The registry as a Markdown table (under the stage table of docs/annotate.md)."""
    lines = ["| column | type | in the table | what it is |", "|---|---|---|---|"]
    lines += [f"| {n} | {c.type} | {'yes' if n in TABLE else '-'} | {c.description} |"
              for n, c in COLUMNS.items()]
    return "\n".join(lines)
