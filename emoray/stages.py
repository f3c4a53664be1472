"""The CPU stages of the annotation pipeline, each a vectorised function over an Arrow batch
declared with its row contract (`emoray.contract.Stage`: what it runs on, the columns it needs,
adds and drops, the stored columns it reads).

    Normalize → (stored rows) → ExpandRequests → SkipHeld → AttachReuse → GroupByText → … → Parse

The four plan stages run on one text-hash partition, where tonight's input rows (side "new")
and the stored rows of the same texts (side "old") meet; the pipeline checks the chain before
Ray starts (`contract.check`) and each stage checks its batch on entry. None of these stages
does GPU work.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from emoray.answers import ParseError
from emoray.quality.calibration import Calibration, calibrate_rows
from emoray.columns import COLUMNS
from emoray.contract import (
    ALL,
    BATCHES,
    INPUT,
    PARTITION,
    STORED,
    Stage,
    stored_columns,
)
from emoray.models import ModelSpec
from emoray.routing import ONE_WAVE, in_wave
from emoray.statuses import LATEST, NOT_HELD, REUSABLE, TEXT_PROBLEMS
from emoray.lake.table import SCHEMA
from emoray.tasks import TASKS, TaskRequest

NEW_ROW = ("side", "doc_id", "text_sha256", "text", "text_status", "request")
"""Columns of an input row as normalized (all strings)."""

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
              n_requests: int = 1, stats=None, schema: pa.Schema | None = None,
              wave: tuple[int, int] = ONE_WAVE) -> pa.Table:
    """Input rows → doc_id (string), text, text_sha256, text_status (`ok`, or why no
    prompt can be sent: `empty_text`, `invalid_text`) and the row's own task request (when the
    input names one), as plan input (`schema`, default `PLAN_INPUT`). Texts are read as bytes
    so one invalid value marks its row instead of failing the file. Keeps the rows of `wave`
    (k, n) (`routing.in_wave`: a large night runs in n waves). Counts the rows kept and the
    row x task pairs they ask for."""
    ids = pc.cast(batch[id_column], pa.string())
    request = (pc.cast(batch[task_column], pa.string()) if task_column
               else pa.nulls(batch.num_rows, pa.string()))
    raw = batch[text_column]
    if not pa.types.is_binary(raw.type):
        raw = pc.cast(pc.cast(raw, pa.string()), pa.binary())
    texts, sha, status = zip(*map(_check_text, raw.to_pylist())) if len(raw) else ([], [], [])
    rows = in_wave(pa.table({
        "doc_id": ids, "text": pa.array(texts, pa.string()),
        "text_sha256": pa.array(sha, pa.string()),
        "text_status": pa.array(status, pa.string()), "request": request}), *wave)
    if stats is not None:
        unasked = rows["request"].null_count
        count(stats, rows_in=rows.num_rows, pairs=rows.num_rows - unasked + unasked * n_requests)
    return as_plan_input(rows, "new", schema)


def count(stats, **counts: int) -> None:
    """Add `counts` to the run's `stats` actor (`pipeline.RunStats`) and wait for it: a batch
    moves on only once its counts are in, so the summary the driver reads after the last batch
    holds them all (a fire-and-forget call could still be on its way: a night of nothing new
    reported 0 rows already held). One round trip of about a millisecond per batch."""
    settle(stats.add.remote(**counts))


def settle(call) -> None:
    """Wait for `call` to the run's stats actor. An ended night's actor is gone (an engine actor
    Ray restarts holds the first night's until the next batch binds it): nothing to count."""
    import ray

    try:
        ray.get(call)
    except ray.exceptions.RayActorError:
        pass


def sends_prompt(text_status: str, cached_output: str | None) -> bool:
    """Whether a planned row costs a prompt: its text is usable and no stored answer for the
    same text is reused. The engine stage and the dry run's count both follow this."""
    return cached_output is None and text_status == "ok"


DISCRETE = tuple(name for name, task in TASKS.items() if task.answer.discrete)


def as_plan_input(batch: pa.Table, side: str, schema: pa.Schema | None = None) -> pa.Table:
    """Pad input rows or stored annotation rows to the plan's common schema (`schema`, default
    `PLAN_INPUT`), so both meet in one table after the shuffle."""
    schema = schema or PLAN_INPUT
    n = batch.num_rows
    cols = {"side": pa.array([side] * n, pa.string())}
    for f in schema:
        if f.name != "side":
            cols[f.name] = (pc.cast(batch[f.name], f.type) if f.name in batch.column_names
                            else pa.nulls(n, f.type))
    return pa.table(cols, schema=schema)


def stored_for_model(batch: pa.Table, model: ModelSpec,
                     schema: pa.Schema | None = None) -> pa.Table:
    """Stored annotation rows of `model` (`ModelSpec.same_model`), as plan input."""
    return as_plan_input(batch.filter(model.same_model(batch["model"])), "old", schema)


def _keys(t: pa.Table) -> pa.Table:
    """Add join keys that never hold null (Arrow joins never match null keys)."""
    sha = pc.fill_null(t["text_sha256"], "")
    task_key = pc.binary_join_element_wise(
        t["task"], pc.fill_null(t["target"], ""), t["prompt_version"], "|")
    return t.append_column("sha_key", sha).append_column("task_key", task_key)


def _side(batch: pa.Table, side: str) -> pa.Table:
    return batch.filter(pc.equal(batch["side"], side))


def expand_requests(batch: pa.Table, requests: list[TaskRequest],
                    versions: dict[str, str]) -> pa.Table:
    """Each input row × the task requests it asks (all of them, or the one its `request`
    column names), with the task's prompt version (`versions`, `EngineConfig.prompt_version`);
    stored rows pass through."""
    new = _side(batch, "new")
    wanted = [_side(batch, "old")]
    for r in requests:
        asks = new.filter(pc.or_kleene(pc.is_null(new["request"]),
                                       pc.equal(new["request"], r.key)))
        n = asks.num_rows
        for name, value in (("task", r.task.name), ("target", r.target),
                            ("prompt_version", versions[r.task.name])):
            asks = asks.set_column(asks.schema.get_field_index(name), name,
                                   pa.array([value] * n, pa.string()))
        wanted.append(asks)
    return pa.concat_tables(wanted).drop_columns(["request"])


def skip_held(batch: pa.Table, stats=None, not_held: tuple[str, ...] = NOT_HELD) -> pa.Table:
    """Drop each input row × task the table already holds for this doc and text (any stored
    status but `not_held`, default `statuses.NOT_HELD`, under the same prompt version); stored
    rows pass through."""
    new, old = _keys(_side(batch, "new")), _keys(_side(batch, "old"))
    held = old.filter(pc.invert(pc.is_in(old["status"], pa.array(not_held, pa.string())))).select(
        ["doc_id", "sha_key", "task_key"])
    todo = new.join(held, keys=["doc_id", "sha_key", "task_key"], join_type="left anti")
    if stats is not None:
        count(stats, already_held=new.num_rows - todo.num_rows)
    return pa.concat_tables([old, todo.select(old.column_names)]).drop_columns(
        ["sha_key", "task_key"])


REUSED = ("cached_output", "cached_confidence", "cached_score", "cached_status")
"""A stored answer for the same text and task attached to an input row (null: none)."""
WANTED = ("doc_id", "text_sha256", "text", "text_status", "task", "target", "prompt_version")


def attach_reuse(batch: pa.Table) -> pa.Table:
    """Input rows, each with the latest (`statuses.LATEST`) reusable stored answer for the same
    text, task and prompt version (`statuses.REUSABLE`), if any; stored rows leave here."""
    new, old = _keys(_side(batch, "new")), _keys(_side(batch, "old"))
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
    return (new.select([*WANTED, "sha_key", "task_key"])
            .join(latest, keys=["sha_key", "task_key"], join_type="left outer")
            .select([*WANTED, *REUSED]))


PROMPT_ROW = ("doc_ids", "text_sha256", "text", "text_status", "task", "target",
              "prompt_version", *REUSED)
"""One distinct text × task request: what the engine is asked, and the docs its answer is for."""


def group_by_text(batch: pa.Table, requests: list[TaskRequest]) -> pa.Table:
    """One row per distinct text and task request, with the list of doc_ids to fan its answer
    out to, laid out task-major (in `requests` order) so consecutive prompts share their
    instruction prefix."""
    keyed = _keys(batch)
    grouped = keyed.group_by(["sha_key", "task_key"], use_threads=False).aggregate([
        ("doc_id", "list"), *((c, "first") for c in PROMPT_ROW[1:])])
    grouped = grouped.rename_columns([c.removesuffix("_first").replace("doc_id_list", "doc_ids")
                                      for c in grouped.column_names])
    order = {r.task.name: i for i, r in enumerate(requests)}
    rank = pa.array([order[t] for t in grouped["task"].to_pylist()], pa.int32())
    return grouped.append_column("_rank", rank).sort_by([("_rank", "ascending")]).select(
        list(PROMPT_ROW))


NORMALIZE = Stage(
    "Normalize", INPUT, normalize, adds=NEW_ROW)
"""Its input columns are the configured ones (`id_column`, `text_column`, `task_column`),
checked in every input file by `locations.screen_files` before Ray starts."""
READ_STORED = Stage(
    "ReadStored", STORED, stored_for_model, stored=("model",))
"""The stored rows of this model (the read takes the `stored` columns of every stage)."""
EXPAND_REQUESTS = Stage(
    "ExpandRequests", PARTITION, expand_requests,
    needs=("side", "doc_id", "text_sha256", "text", "text_status", "request"),
    adds=("task", "target", "prompt_version"), drops=("request",))
SKIP_HELD = Stage(
    "SkipHeld", PARTITION, skip_held,
    needs=("side", "doc_id", "text_sha256", "task", "target", "prompt_version"),
    stored=("doc_id", "text_sha256", "task", "target", "prompt_version", "status"),
    options=("not_held",))  # the missing-pairs count holds every stored row (`not_held=()`)
ATTACH_REUSE = Stage(
    "AttachReuse", PARTITION, attach_reuse, needs=("side", *WANTED), adds=REUSED,
    drops=("side",),
    stored=("text_sha256", "task", "target", "prompt_version", "raw_output", "raw_confidence",
            "confidence", "score", "status", *(c for c, _ in LATEST)))
GROUP_BY_TEXT = Stage(
    "GroupByText", PARTITION, group_by_text, needs=(*WANTED, *REUSED), adds=("doc_ids",),
    drops=("doc_id",))
PLAN = (EXPAND_REQUESTS, SKIP_HELD, ATTACH_REUSE, GROUP_BY_TEXT)


def plan_input(stored: list[str]) -> pa.Schema:
    """The common schema of input and stored rows in a partition: the normalized input row's
    columns, then the `stored` columns the stages read (the table's types)."""
    return pa.schema([pa.field(c, COLUMNS[c].type) for c in NEW_ROW]
                     + [pa.field(c, COLUMNS[c].type) for c in stored
                        if c not in NEW_ROW and c != "model"])


PLAN_INPUT = plan_input(stored_columns(PLAN))
"""Rows entering the plan: input rows (side "new") and stored annotations (side "old")."""


def run_chain(batch: pa.Table, steps: list[tuple[Stage, dict]]) -> pa.Table:
    """Run stages one after the other on one batch (the plan stages of one partition)."""
    for stage, kwargs in steps:
        batch = stage(batch, **kwargs)
    return batch


def plan(batch: pa.Table, requests: list[TaskRequest], versions: dict[str, str],
         stats=None) -> pa.Table:
    """Decide, for one hash partition (every row of a text hash lands in the same one), what
    each input row × task needs: nothing (the table already holds it for this doc and text),
    the stored answer for the same text (reuse), or a prompt, one per distinct text: the four
    `PLAN` stages in order."""
    return run_chain(batch, [(EXPAND_REQUESTS, {"requests": requests, "versions": versions}),
                             (SKIP_HELD, {"stats": stats}), (ATTACH_REUSE, {}),
                             (GROUP_BY_TEXT, {"requests": requests})])


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


def parse(batch: pa.Table, model_identity: str, run_id: str,
          calibration: Calibration | None = None) -> pa.Table:
    """Model answers → typed columns (`score`: the expected value where the engine gives one,
    else the parsed answer's), a status and the model's confidence after `calibration`
    (`calibration.calibrate_rows`), fanned out to one row per doc_id, in the annotation
    table's schema."""
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
    out["model"] = pa.array([model_identity] * n, pa.string())
    out["run_id"] = pa.array([run_id] * n, pa.string())
    now = datetime.now(timezone.utc)
    out["annotated_at"] = pa.array([now] * n, pa.timestamp("us", tz="UTC"))
    out["decided_by"] = pa.nulls(n, pa.string())  # a model's own answer (`emoray.cascade`)
    return pa.table({f.name: out[f.name] for f in SCHEMA}, schema=SCHEMA)


PARSE = Stage(
    "Parse", BATCHES, parse,
    needs=("doc_ids", "text_sha256", "task", "target", "prompt_version", "raw_output",
           "confidence", "expected_score", "truncated", "error", "finish_reason",
           "text_status"),
    adds=tuple(SCHEMA.names), drops=ALL)
"""Answers → the annotation table's rows, one per doc_id."""
