"""The CPU stages of the annotation pipeline, each a vectorised function over an Arrow batch.

Every stage names the columns it needs (`NEEDS`), so the pipeline checks a dataset's columns
before it starts an engine. None of them does GPU work; they run as Ray tasks that Ray Data fuses
with their neighbours.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from emoray.answers import ParseError
from emoray.table import SCHEMA
from emoray.tasks import TASKS, TaskRequest

NEEDS = {
    "normalize": ("id", "text"),
    "dedup": ("doc_id", "text", "text_sha256", "empty"),
    "expand": ("doc_ids", "text", "text_sha256", "empty"),
    "parse": ("doc_ids", "text_sha256", "task", "target", "prompt_version", "raw_output",
              "confidence", "truncated", "error", "finish_reason", "empty"),
}


def normalize(batch: pa.Table, id_column: str, text_column: str, stats=None) -> pa.Table:
    """Input rows → doc_id (string), text, text_sha256 and `empty` (null or blank text)."""
    ids = pc.cast(batch[id_column], pa.string())
    texts = pc.cast(batch[text_column], pa.string())
    values = texts.to_pylist()
    sha = [None if t is None else hashlib.sha256(t.encode("utf-8")).hexdigest() for t in values]
    empty = [t is None or not t.strip() for t in values]
    if stats is not None:
        stats.add.remote(rows_in=batch.num_rows)
    return pa.table({"doc_id": ids, "text": texts, "text_sha256": pa.array(sha, pa.string()),
                     "empty": pa.array(empty, pa.bool_())})


def dedup(batch: pa.Table) -> pa.Table:
    """Collapse rows with the same text into one row holding every doc_id (the batch must hold
    all rows of each hash: the pipeline hash-partitions on text_sha256 first)."""
    grouped = batch.group_by(["text_sha256", "empty"], use_threads=False).aggregate(
        [("doc_id", "list"), ("text", "first")])
    return grouped.rename_columns(
        {"doc_id_list": "doc_ids", "text_first": "text"}).select(list(NEEDS["expand"]))


def single(batch: pa.Table) -> pa.Table:
    """Without dedup: every row is its own group of one doc_id."""
    offsets = pa.array(range(batch.num_rows + 1), pa.int32())
    doc_ids = pa.ListArray.from_arrays(offsets, pc.cast(batch["doc_id"], pa.string()))
    return batch.drop_columns(["doc_id"]).append_column("doc_ids", doc_ids).select(
        list(NEEDS["expand"]))


def expand(batch: pa.Table, requests: list[TaskRequest], template: int, constrained: bool
           ) -> pa.Table:
    """Each text × each requested (task, target), task-major so that consecutive prompts share
    their instruction prefix (prefix cache hits)."""
    parts = []
    n = batch.num_rows
    for r in requests:
        parts.append(batch.append_column("task", pa.array([r.task.name] * n, pa.string()))
                     .append_column("target", pa.array([r.target] * n, pa.string()))
                     .append_column("prompt_version", pa.array(
                         [r.task.prompt_version(template, constrained)] * n, pa.string())))
    return pa.concat_tables(parts)


def _status(empty: bool, raw: str | None, error: str | None, truncated: bool, task: str,
            finish_reason: str | None):
    """(status, score, label, labels, error) of one answer."""
    if empty:
        return "empty_text", None, None, None, "text is null or blank; no prompt sent"
    if error is not None or raw is None:
        return "failed", None, None, None, error or "engine returned no output"
    try:
        parsed = TASKS[task].answer.parse(raw)
    except ParseError as e:
        hint = " (answer hit max_tokens)" if finish_reason == "length" else ""
        return "parse_error", None, None, None, f"{e}{hint}"
    status = "truncated" if truncated else "ok"
    note = "text cut to fit the model context" if truncated else None
    return status, parsed.score, parsed.label, parsed.labels, note


def parse(batch: pa.Table, model: str, run_id: str) -> pa.Table:
    """Model answers → typed columns and a status, fanned out to one row per doc_id, in the
    annotation table's schema."""
    cols = batch.select(["empty", "raw_output", "error", "truncated", "task",
                         "finish_reason"]).to_pydict()
    results = [_status(*row) for row in zip(*cols.values())]
    status, score, label, labels, error = (list(x) for x in zip(*results)) if results else [[]] * 5
    per_text = {
        "text_sha256": batch["text_sha256"], "task": batch["task"], "target": batch["target"],
        "score": pa.array(score, pa.float64()), "label": pa.array(label, pa.string()),
        "labels": pa.array(labels, pa.list_(pa.string())), "confidence": batch["confidence"],
        "raw_output": batch["raw_output"], "status": pa.array(status, pa.string()),
        "error": pa.array(error, pa.string()), "prompt_version": batch["prompt_version"],
    }
    doc_ids = batch["doc_ids"].combine_chunks()
    parents = pc.list_parent_indices(doc_ids)
    out = {name: pc.take(col, parents) for name, col in per_text.items()}
    out["doc_id"] = pc.list_flatten(doc_ids)
    n = len(out["doc_id"])
    out["model"] = pa.array([model] * n, pa.string())
    out["run_id"] = pa.array([run_id] * n, pa.string())
    now = datetime.now(timezone.utc)
    out["annotated_at"] = pa.array([now] * n, pa.timestamp("us", tz="UTC"))
    return pa.table({f.name: out[f.name] for f in SCHEMA}, schema=SCHEMA)
