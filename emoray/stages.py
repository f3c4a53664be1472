"""The CPU stages of the annotation pipeline, each a vectorised function over an Arrow batch.

Every stage names the columns it needs (`NEEDS`) and checks them on entry (`require`); the input
columns are checked by `emoray.locations.screen_files` on the driver before anything runs, and the
engine starts only on the first prompt, so a broken chain fails before any GPU work. None of
these stages does GPU work; they run as Ray tasks that Ray Data fuses with their neighbours.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from emoray.answers import ParseError
from emoray.calibration import Calibration, calibrate_rows
from emoray.models import ModelSpec
from emoray.statuses import LATEST, NOT_HELD, REUSABLE, TEXT_PROBLEMS
from emoray.table import SCHEMA
from emoray.tasks import TASKS, TaskRequest

NEEDS = {
    "plan": ("side", "doc_id", "text_sha256", "text", "text_status", "request", "task", "target",
             "prompt_version", "raw_output", "score", "confidence", "raw_confidence", "status",
             "annotated_at", "run_id"),
    "engine": ("doc_ids", "text_sha256", "text", "text_status", "task", "target", "prompt_version",
               "cached_output", "cached_confidence", "cached_score", "cached_status"),
    "parse": ("doc_ids", "text_sha256", "task", "target", "prompt_version", "raw_output",
              "confidence", "expected_score", "truncated", "error", "finish_reason",
              "text_status"),
}


def require(batch: pa.Table, stage: str) -> None:
    """Fail with the stage's name and the missing columns when a batch lacks what it needs."""
    missing = [c for c in NEEDS[stage] if c not in batch.column_names]
    if missing:
        raise ValueError(f"stage {stage} needs columns {missing}; got {batch.column_names}")


def _check_text(raw: bytes | None) -> tuple[str | None, str | None, str]:
    """(text, sha256 of the exact bytes, text_status) of one input value."""
    if raw is None:
        return None, None, "empty_text"
    sha = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, sha, "invalid_text"
    return text, sha, "ok" if text.strip() else "empty_text"


def normalize(batch: pa.Table, id_column: str, text_column: str, task_column: str | None = None,
              n_requests: int = 1, stats=None) -> pa.Table:
    """Input rows → doc_id (string), text, text_sha256, text_status (`ok`, or why no
    prompt can be sent: `empty_text`, `invalid_text`) and the row's own task request (when the
    input names one), as plan input. Texts are read as bytes so one invalid value marks its row
    instead of failing the file. Counts rows in and the row x task pairs they ask for."""
    ids = pc.cast(batch[id_column], pa.string())
    request = (pc.cast(batch[task_column], pa.string()) if task_column
               else pa.nulls(batch.num_rows, pa.string()))
    raw = batch[text_column]
    if not pa.types.is_binary(raw.type):
        raw = pc.cast(pc.cast(raw, pa.string()), pa.binary())
    texts, sha, status = zip(*map(_check_text, raw.to_pylist())) if len(raw) else ([], [], [])
    if stats is not None:
        own = batch.num_rows - request.null_count
        stats.add.remote(rows_in=batch.num_rows, pairs=own + request.null_count * n_requests)
    return as_plan_input(pa.table({
        "doc_id": ids, "text": pa.array(texts, pa.string()),
        "text_sha256": pa.array(sha, pa.string()),
        "text_status": pa.array(status, pa.string()), "request": request}), "new")


PLAN_INPUT = pa.schema([
    ("side", pa.string()), ("doc_id", pa.string()), ("text_sha256", pa.string()),
    ("text", pa.string()), ("text_status", pa.string()), ("request", pa.string()),
    ("task", pa.string()),
    ("target", pa.string()),
    ("prompt_version", pa.string()), ("raw_output", pa.string()), ("score", pa.float64()),
    ("confidence", pa.float64()),
    ("raw_confidence", pa.float64()), ("status", pa.string()),
    ("annotated_at", pa.timestamp("us", tz="UTC")), ("run_id", pa.string()),
])
"""Rows entering the plan: input rows (side "new") and stored annotations (side "old")."""

def sends_prompt(text_status: str, cached_output: str | None) -> bool:
    """Whether a planned row costs a prompt: its text is usable and no stored answer for the
    same text is reused. The engine stage and the dry run's count both follow this."""
    return cached_output is None and text_status == "ok"


DISCRETE = tuple(name for name, task in TASKS.items() if task.answer.discrete)


def as_plan_input(batch: pa.Table, side: str) -> pa.Table:
    """Pad input rows or stored annotation rows to the plan's common schema."""
    n = batch.num_rows
    cols = {"side": pa.array([side] * n, pa.string())}
    for f in PLAN_INPUT:
        if f.name != "side":
            cols[f.name] = (pc.cast(batch[f.name], f.type) if f.name in batch.column_names
                            else pa.nulls(n, f.type))
    return pa.table(cols, schema=PLAN_INPUT)


def stored_for_model(batch: pa.Table, model: ModelSpec) -> pa.Table:
    """Stored annotation rows of `model` (`ModelSpec.same_model`), as plan input."""
    return as_plan_input(batch.filter(model.same_model(batch["model"])), "old")


def _keys(t: pa.Table) -> pa.Table:
    """Add join keys that never hold null (Arrow joins never match null keys)."""
    sha = pc.fill_null(t["text_sha256"], "")
    task_key = pc.binary_join_element_wise(
        t["task"], pc.fill_null(t["target"], ""), t["prompt_version"], "|")
    return t.append_column("sha_key", sha).append_column("task_key", task_key)


def plan(batch: pa.Table, requests: list[TaskRequest], versions: dict[str, str],
         stats=None) -> pa.Table:
    """Decide, for one hash partition (every row of a text hash lands in the same one), what
    each input row × task needs: nothing (the table already holds it for this doc and text),
    the stored answer for the same text (reuse), or a prompt. Texts needing a prompt are
    grouped so each is sent once, with the list of doc_ids to fan its answer out to.
    Requests are laid out task-major so consecutive prompts share their instruction prefix.
    A row naming its own request (`request` column) is asked that one only. `versions`: the
    prompt version of each task (`EngineConfig.prompt_version`)."""
    require(batch, "plan")
    side = batch["side"]
    new = batch.filter(pc.equal(side, "new")).select(
        ["doc_id", "text_sha256", "text", "text_status", "request"])
    old = _keys(batch.filter(pc.equal(side, "old")))
    wanted = []
    for r in requests:
        asks = new.filter(pc.or_kleene(pc.is_null(new["request"]),
                                       pc.equal(new["request"], r.key))).drop_columns(["request"])
        n = asks.num_rows
        wanted.append(asks.append_column("task", pa.array([r.task.name] * n, pa.string()))
                      .append_column("target", pa.array([r.target] * n, pa.string()))
                      .append_column("prompt_version", pa.array(
                          [versions[r.task.name]] * n, pa.string())))
    wanted = _keys(pa.concat_tables(wanted))
    held = old.filter(pc.invert(pc.is_in(old["status"], pa.array(NOT_HELD)))).select(
        ["doc_id", "sha_key", "task_key"])
    todo = wanted.join(held, keys=["doc_id", "sha_key", "task_key"], join_type="left anti")
    reusable = old.filter(pc.is_in(old["status"], pa.array(REUSABLE)))
    # a class answer stored before raw_confidence existed: its confidence was the model's own;
    # a regression answer's then meant something else (its tokens' probability): none
    reusable = reusable.set_column(
        reusable.schema.get_field_index("raw_confidence"), "raw_confidence", pc.if_else(
            pc.is_in(reusable["task"], pa.array(DISCRETE)),
            pc.coalesce(reusable["raw_confidence"], reusable["confidence"]),
            reusable["raw_confidence"]))
    latest = (reusable.sort_by(list(LATEST))
              .group_by(["sha_key", "task_key"], use_threads=False)
              .aggregate([("raw_output", "first"), ("raw_confidence", "first"),
                          ("score", "first"), ("status", "first")])
              .rename_columns({"raw_output_first": "cached_output",
                               "raw_confidence_first": "cached_confidence",
                               "score_first": "cached_score", "status_first": "cached_status"}))
    todo = todo.join(latest, keys=["sha_key", "task_key"], join_type="left outer")
    grouped = todo.group_by(["sha_key", "task_key"], use_threads=False).aggregate([
        ("doc_id", "list"), ("text_sha256", "first"), ("text", "first"),
        ("text_status", "first"),
        ("task", "first"), ("target", "first"), ("prompt_version", "first"),
        ("cached_output", "first"), ("cached_confidence", "first"), ("cached_score", "first"),
        ("cached_status", "first"),
    ])
    grouped = grouped.rename_columns([c.removesuffix("_first").replace("doc_id_list", "doc_ids")
                                      for c in grouped.column_names])
    order = {r.task.name: i for i, r in enumerate(requests)}
    rank = pa.array([order[t] for t in grouped["task"].to_pylist()], pa.int32())
    grouped = grouped.append_column("_rank", rank).sort_by([("_rank", "ascending")])
    if stats is not None:
        stats.add.remote(already_held=wanted.num_rows - todo.num_rows)
    return grouped.select(list(NEEDS["engine"]))


def _status(text_status: str, raw: str | None, error: str | None, truncated: bool, task: str,
            finish_reason: str | None):
    """(status, score, label, labels, error) of one answer."""
    if text_status != "ok":
        return text_status, None, None, None, TEXT_PROBLEMS[text_status]
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


def parse(batch: pa.Table, model: str, run_id: str,
          calibration: Calibration | None = None) -> pa.Table:
    """Model answers → typed columns (`score`: the expected value where the engine gives one,
    else the parsed answer's), a status and the model's confidence after `calibration`
    (`calibration.calibrate_rows`), fanned out to one row per doc_id, in the annotation
    table's schema."""
    require(batch, "parse")
    cols = batch.select(["text_status", "raw_output", "error", "truncated", "task",
                         "finish_reason"]).to_pydict()
    results = [_status(*row) for row in zip(*cols.values())]
    status, score, label, labels, error = (list(x) for x in zip(*results)) if results else [[]] * 5
    score = [e if e is not None and s is not None else s
             for s, e in zip(score, batch["expected_score"].to_pylist())]
    confidence, calibrated = calibrate_rows(
        calibration, cols["task"], batch["prompt_version"].to_pylist(),
        batch["confidence"].to_pylist())
    per_text = {
        "text_sha256": batch["text_sha256"], "task": batch["task"], "target": batch["target"],
        "score": pa.array(score, pa.float64()), "label": pa.array(label, pa.string()),
        "labels": pa.array(labels, pa.list_(pa.string())),
        "confidence": pa.array(confidence, pa.float64()), "raw_confidence": batch["confidence"],
        "calibration": pa.array(calibrated, pa.string()),
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
