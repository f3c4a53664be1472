"""A cascade across models (profile `cascade:`): the cheapest model answers every pair the
cascade has not decided; its answers at or above a task's acceptance threshold on the calibrated
confidence are final, the rest go to the next model, and the last model answers whatever reaches
it.

Each step is an ordinary annotate run of its model (`pipeline.Annotator`): its answers land in
the table under its own identity, with its own held check and reuse, so a re-run sends no prompt
and a changed threshold re-decides from the answers already stored, prompting the next model
only for pairs it has not answered. The steps after the first read a staged input holding only
the escalated pairs (`_cascade/<run>/step-<k>/` beside the table, removed when the run ends).
A step whose model already holds an answer to every pair reaching it is not run at all: it
would send nothing, and starting its night would end the next step's warm engine.

Then the decisions are committed as rows of their own: the final answer's row with `model` set
to the cascade's identity (a hash over the models, their prompt versions, calibrations and
thresholds, as `prompt_version` hashes a prompt) and `decided_by` naming the model whose answer
it is. Why rows and not a column on the models' rows: those rows are committed before anyone
knows whether they are final, the same answer can be final under one cascade and escalated
under another, and with the cascade's own rows every reader (enrich, Polars, DuckDB) selects a
cascade's labels exactly as it selects one model's (`model = <identity>`). The cheaper models'
answers that were not accepted stay in the table under their own identities.

What tonight's input is read once by the first step (with `--since-last`, what the cascade's
last completed run did not read: the cascade's own report records it, its steps' reports do
not); its ids, texts and task requests are held in the driver (a night's increment, not a
whole lake; a cascade in waves is not built). A repeated doc id gets one decision (its last
row's text), and a pair is decided again when its text changed.

A dry run (`plan`) knows the first step's pairs exactly (its own dry run); a later step's
only as a bound: every pair the cascade has not decided reaching it. A budget is held to that
worst case before any engine starts, and while the run runs each step is held to what the steps
before it left; a step that spends it ends the cascade once what can be decided is committed
(`budget.BudgetSpent`), and the next run continues from the table.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from emoray import budget, cost
from emoray.lake import table
from emoray.config import AnnotateConfig, BudgetConfig, CascadeStep, ConfigError
from emoray.engines.stage import engine_resources
from emoray.lake.lock import TableLock
from emoray.quality.calibration import calibrate_rows
from emoray.pipeline import (
    IncompleteRunError,
    Scoring,
    build_annotator,
    new_run_id,
    render_dry_run,
    resolve_scoring,
)
from emoray.statuses import NOT_HELD, TEXT_PROBLEMS
from emoray.tasks import TASKS, request_key

STAGING = "_cascade"
"""Folder beside the table's data holding each running cascade's staged inputs."""


@dataclass(frozen=True)
class Step:
    """One model of the cascade with what its answers are keyed by, and its thresholds."""

    spec: CascadeStep
    scoring: Scoring
    accept: dict[str, float]
    """Thresholds by task request or task: the step's own, or its calibration file's."""

    def threshold(self, task: str, target: str | None) -> float | None:
        """The acceptance threshold of (task, target): its request's, else its task's."""
        return self.accept.get(request_key(task, target), self.accept.get(task))


def prepare(config: AnnotateConfig) -> tuple[list[Step], str]:
    """The cascade's steps and identity, checked before any engine starts: at least two models,
    the last accepting nothing, every accepted task asked for and calibrated for that model."""
    if len(config.cascade) < 2:
        raise ConfigError("cascade needs two models or more (cheapest first); for one model "
                          "set engine.model and leave cascade empty")
    if config.cascade[-1].accept:
        raise ConfigError("the cascade's last model answers whatever reaches it: leave its "
                          "accept empty")
    steps = []
    for spec in config.cascade:
        scoring = resolve_scoring(config.model_copy(update={
            "engine": config.engine.model_copy(update={"model": spec.model}),
            "calibration": spec.calibration, "cascade": []}))
        keys = {r.key for r in scoring.requests} | {r.task.name for r in scoring.requests}
        accept = _thresholds(spec, scoring, keys)
        for key, threshold in accept.items():
            task = key.split(":", 1)[0]
            temperature = (scoring.calibration.temperature(task, scoring.versions[task])
                           if scoring.calibration and task in scoring.versions else None)
            if key not in keys:
                raise ConfigError(f"cascade model {spec.model} accepts {key!r}, which the run "
                                  f"does not ask for (tasks: {', '.join(sorted(keys))})")
            if not 0 <= threshold <= 1:
                raise ConfigError(f"cascade model {spec.model}: threshold {threshold} of "
                                  f"{key!r} is not a confidence in [0, 1]")
            if temperature is None:
                raise ConfigError(
                    f"cascade model {spec.model} has no calibration for task {task} (under "
                    f"prompt version {scoring.versions.get(task)}), so it cannot accept for it: "
                    "fit one with `emoray calibrate` and set its calibration, or drop "
                    f"{key!r} from its accept (regression tasks carry no temperature)")
        steps.append(Step(spec, scoring, accept))
    return steps, identity(steps)


def _thresholds(spec: CascadeStep, scoring: Scoring, keys: set[str]) -> dict[str, float]:
    """The step's thresholds: as given, or (`accept: calibration`) those its calibration file
    holds for the tasks the run asks for."""
    if spec.accept != "calibration":
        return dict(spec.accept)
    held = scoring.calibration.thresholds if scoring.calibration else {}
    accept = {task: entry["threshold"] for task, entry in held.items() if task in keys}
    if not accept:
        raise ConfigError(f"cascade model {spec.model} takes its thresholds from its "
                          f"calibration, which holds none for the run's tasks: fit them with "
                          "`emoray calibrate --max-loss X`, or give accept per task")
    return accept


def identity(steps: list[Step]) -> str:
    """`cascade-<12 hex>` over each model's identity, prompt versions, calibration version and
    thresholds: any change to what decides gives another identity."""
    key = json.dumps([{"model": s.scoring.model.identity, "versions": s.scoring.versions,
                       "calibration": s.scoring.calibration.version if s.scoring.calibration
                       else None, "accept": s.accept} for s in steps], sort_keys=True)
    return "cascade-" + hashlib.sha256(key.encode()).hexdigest()[:12]


def step_config(config: AnnotateConfig, step: Step, run_id: str, k: int,
                staged: str | None = None, caps: BudgetConfig | None = None) -> AnnotateConfig:
    """The annotate run of step `k` (1-based): the step's model and calibration, run id
    `<run>-<k>`; after the first, the staged input of the pairs that reached it; held to `caps`
    (what the steps before it left of the budget) when given."""
    update = {"engine": step.scoring.config.engine, "calibration": step.spec.calibration,
              "cascade": [], "run_id": f"{run_id}-{k}",
              **({"budget": caps} if caps is not None else {})}
    if staged is not None:
        return config.reading_staged(staged, "task", **update)
    return config.model_copy(update=update)


def tonight(annotator) -> dict[str, dict]:
    """The first step's input rows after Normalize, by doc_id (the last row of a repeated id:
    one decision per pair): text, text hash and the row's own task request (None: every
    request)."""
    import ray

    ds = annotator.texts().select_columns(["doc_id", "text", "text_sha256", "request"])
    rows = [r for ref in ds.to_arrow_refs() for r in ray.get(ref).to_pylist()]
    return {r["doc_id"]: r for r in rows}


def pairs(rows: dict[str, dict], requests) -> list[tuple[str, str, str | None]]:
    """Every (doc_id, task, target) `rows` ask for."""
    return [(doc_id, r.task.name, r.target) for doc_id, row in rows.items() for r in requests
            if row["request"] in (None, r.key)]


def latest(tbl: table.AnnotationTable, model: pads.Expression, rows: dict[str, dict],
           versions: dict[str, str] | None = None) -> dict[tuple, dict]:
    """The newest row per (doc_id, task, target) of tonight's `rows` where `model` holds (under
    `versions`, when given) and the text is tonight's (a changed text is a new question)."""
    if not rows or not tbl.exists():
        return {}
    where = table.held_filter(model, versions) if versions else model
    found = tbl.read(filter=where & pads.field("doc_id").isin(list(rows))).to_pylist()
    out: dict[tuple, dict] = {}
    for r in sorted(found, key=lambda r: r["annotated_at"]):
        if r["text_sha256"] == rows[r["doc_id"]]["text_sha256"]:
            out[r["doc_id"], r["task"], r["target"]] = r
    return out


def recalibrated(step: Step, answers: dict[tuple, dict]) -> dict[tuple, dict]:
    """`answers` with `confidence` and `calibration` from their model's own confidence under
    the step's calibration: a stored answer may have been calibrated otherwise, or not."""
    rows = list(answers.values())
    confidence, tags = calibrate_rows(step.scoring.calibration, [r["task"] for r in rows],
                                      [r["prompt_version"] for r in rows],
                                      [r["raw_confidence"] for r in rows])
    return {k: {**r, "confidence": c, "calibration": t}
            for (k, r), c, t in zip(answers.items(), confidence, tags)}


def decide(step: Step, answers: dict[tuple, dict], pending: list[tuple], last: bool
           ) -> tuple[list[dict], list[tuple]]:
    """(final rows, pairs for the next step) of `pending` from this step's `answers`: final
    where the answer is ok and its calibrated confidence reaches the task's threshold, or its
    text is unusable (no model answers it better), or this is the last step."""
    final, onward = [], []
    for key in pending:
        row = answers.get(key)
        if row is None:
            onward.append(key)
            continue
        threshold = step.threshold(key[1], key[2])
        accepted = (last or row["status"] in TEXT_PROBLEMS or (
            row["status"] == "ok" and threshold is not None and row["confidence"] is not None
            and row["confidence"] >= threshold))
        (final.append(row) if accepted else onward.append(key))
    return final, onward


def stage(rows: dict[str, dict], pending: list[tuple], tbl: table.AnnotationTable, run_id: str,
          k: int) -> str:
    """The input of step `k`: one row (id, text, task request) per pending pair, written beside
    the table; returns its location."""
    staged = pa.table({"id": [d for d, _, _ in pending],
                       "text": [rows[d]["text"] for d, _, _ in pending],
                       "task": [request_key(t, g) for _, t, g in pending]})
    fs, root = tbl._fs()
    folder = posixpath.join(STAGING, run_id, f"step-{k}")
    fs.create_dir(posixpath.join(root, folder), recursive=True)
    with fs.open_output_stream(posixpath.join(root, folder, "pairs.parquet")) as out:
        pq.write_table(staged, out)
    return posixpath.join(tbl.uri.rstrip("/"), folder)


def final_rows(chosen: list[dict], ident: str, run_id: str) -> pa.Table:
    """The cascade's rows: each final answer's row under the cascade's identity, naming the
    model that gave it."""
    now = datetime.now(timezone.utc)
    return pa.Table.from_pylist([{**r, "model": ident, "decided_by": r["model"],
                                  "run_id": run_id, "annotated_at": now} for r in chosen],
                                schema=table.SCHEMA)


@dataclass(frozen=True)
class Night:
    """What tonight asks of the cascade: the first step's run (`pipeline.Annotator`), its input
    rows by doc_id (`tonight`), every pair they ask for, and those the cascade has not decided."""

    first: object
    rows: dict[str, dict]
    asked: list[tuple]
    pending: list[tuple]


def read_night(config: AnnotateConfig, steps: list[Step], ident: str, run_id: str,
               tbl: table.AnnotationTable) -> Night:
    """Tonight's input through the first step's Normalize, and the cascade's held check: a
    pair is decided when the cascade holds a row for it, on tonight's text, that is not
    failed."""
    first = build_annotator(step_config(config, steps[0], run_id, 1), reads_for=ident)
    rows = tonight(first)
    asked = pairs(rows, first.requests)
    held = latest(tbl, pads.field("model") == ident, rows)
    return Night(first, rows, asked,
                 [p for p in asked if p not in held or held[p]["status"] in NOT_HELD])


def run_cascade(config: AnnotateConfig) -> dict:
    """Run the cascade of `config` over its input, committing each step's decisions before the
    next step starts; returns its summary (steps, escalation per task, rows committed), also
    written as its run report. With a budget, the worst case (`worst_case`) is held to it before
    any engine starts (`budget.hold`) and each step to what the ones before it left; a spent
    budget ends the run with `budget.BudgetSpent` once what was decided is committed. Pairs
    left undecided otherwise (the last model failed them) end it with `IncompleteRunError` (a
    failed answer is a row, and final at the last step: the next run retries it, as it retries
    any failed row)."""
    steps, ident = prepare(config)
    run_id, started, t0 = config.run_id or new_run_id(), datetime.now(timezone.utc), time.time()
    tbl = table.AnnotationTable(config.output, config.s3)
    if tbl.exists():
        tbl.create()  # a table older than a column (`decided_by`) gains it before it is read
    night = read_night(config, steps, ident, run_id, tbl)
    if config.budget.is_set():
        budget.hold(worst_case(config, steps, ident, night, tbl), config)
    try:
        done = run_steps(config, steps, ident, run_id, tbl, night)
    finally:
        _unstage(tbl, run_id)
    report = _report(config, steps, ident, run_id, night, done, started, t0)
    table.write_report(tbl, report)
    if done.stopped:
        k, line = done.stopped
        raise budget.BudgetSpent(
            f"budget spent ({line}) at step {k} of cascade {ident} "
            f"({steps[k - 1].scoring.model.identity}): run {run_id} committed {done.written} "
            f"rows and left {len(done.pending)} pairs undecided; the next run of this cascade "
            "continues with them (raise the budget to finish sooner)")
    if done.pending:
        raise IncompleteRunError(
            f"cascade run {run_id} committed {done.written} rows; {len(done.pending)} pairs got "
            "no row from its last model: a re-run decides them")
    return report


@dataclass
class Done:
    """What the steps of a run did: each one's run summary, the pairs that reached each, the
    count each model decided, rows committed, the pairs left, and where the budget stopped it
    ((step, the cap's line), or None)."""

    summaries: list[dict]
    reached: dict[int, list[tuple]]
    decided: dict[str, int]
    pending: list[tuple]
    written: int = 0
    stopped: tuple[int, str] | None = None


def run_steps(config: AnnotateConfig, steps: list[Step], ident: str, run_id: str,
              tbl: table.AnnotationTable, night: Night) -> Done:
    """Each step over the pairs the steps before it left undecided, held to what they left of
    the budget, its decisions committed before the next starts; ends at the step that spends
    the budget, or before a step when nothing of it is left."""
    done = Done([], {}, {s.scoring.model.identity: 0 for s in steps}, night.pending)
    tokens, hours, usd = 0, 0.0, config.cost.gpu_hour_usd
    for k, step in enumerate(steps, 1):
        if not done.pending:
            break
        if line := budget.cap_reached(config.budget, tokens, hours, usd):
            done.stopped = (k, line)
            break
        done.reached[k] = done.pending
        answers, line = stored(step, tbl, night), None
        if any(p not in answers or answers[p]["status"] in NOT_HELD for p in done.pending):
            annotator = night.first if k == 1 else build_annotator(step_config(
                config, step, run_id, k, stage(night.rows, done.pending, tbl, run_id, k),
                budget.left(config.budget, tokens, hours, usd)))
            summary, line = answer(annotator, tbl)
            tokens += summary["prompt_tokens"]
            hours += (summary.get("usage") or {}).get("engine_s", 0) / 3600
            answers = stored(step, tbl, night)
        else:  # its model holds every pair: a run would send nothing (and end a warm engine)
            summary = {"run_id": f"{run_id}-{k}", "status": "held", "rows_out": 0,
                       "prompts_sent": 0, "prompt_tokens": 0}
        done.summaries.append(summary)
        final, done.pending = decide(step, answers, done.pending, last=k == len(steps))
        done.decided[step.scoring.model.identity] = len(final)
        done.written += commit(config, tbl, final_rows(final, ident, run_id), run_id, ident)
        if line:  # named against the cascade's caps (the step's were what was left of them)
            done.stopped = (k, budget.cap_reached(config.budget, tokens, hours, usd) or line)
            break
    return done


def stored(step: Step, tbl: table.AnnotationTable, night: Night) -> dict[tuple, dict]:
    """The step model's newest answers to tonight's pairs (its prompt versions, tonight's
    texts), confidences under the step's calibration."""
    return recalibrated(step, latest(tbl, step.scoring.model.same_model(pads.field("model")),
                                     night.rows, step.scoring.versions))


def answer(annotator, tbl: table.AnnotationTable) -> tuple[dict, str | None]:
    """Run one step: its summary, and the cap it spent (None: it answered every pair it was
    sent). A step that spends its budget commits what it answered and raises; its report,
    written before it raised, is its summary."""
    try:
        return annotator.run().as_dict(), None
    except budget.BudgetSpent:
        fs, root = tbl._fs()
        with fs.open_input_stream(posixpath.join(root, table.REPORTS,
                                                 f"{annotator.run_id}.json")) as f:
            report = json.loads(f.read())
        return report, report["budget_spent"]


def _report(config: AnnotateConfig, steps: list[Step], ident: str, run_id: str, night: Night,
            done: Done, started: datetime, t0: float) -> dict:
    """The cascade run's report (`emoray runs` reads it; `--since-last` reads `input_read` of
    an `ok` one only)."""
    return {
        "run_id": run_id, "status": ("budget_spent" if done.stopped else
                                     "incomplete" if done.pending else "ok"),
        "started_at": started.isoformat(), "wall_s": round(time.time() - t0, 2),
        "input": config.input, "output": config.output, "model": ident,
        "rows_out": done.written, "prompt_versions": steps[0].scoring.versions,
        "input_read": night.first.night.read, "tasks": [r.key for r in night.first.requests],
        "pairs": len(night.asked), "already_held": len(night.asked) - len(night.pending),
        "missing_pairs": len(done.pending),
        "prompts_sent": sum(s["prompts_sent"] for s in done.summaries),
        "prompt_tokens": sum(s["prompt_tokens"] for s in done.summaries),
        "budget_spent": done.stopped[1] if done.stopped else None,
        "cascade": [{"model": s.scoring.model.identity, "accept": s.accept,
                     "calibration": s.scoring.calibration.tag if s.scoring.calibration
                     else None} for s in steps],
        "decided_by": done.decided,
        "escalation": escalation(done.reached.get(1, []), done.reached.get(2, [])),
        "reached": {str(k): len(v) for k, v in done.reached.items()},
        "steps": done.summaries}


def escalation(first: list[tuple], second: list[tuple]) -> dict[str, dict]:
    """Per task request: pairs the first model decided on, how many went on, and the share."""
    out: dict[str, dict] = {}
    for pairs_, field in ((first, "pairs"), (second, "escalated")):
        for _, task, target in pairs_:
            entry = out.setdefault(request_key(task, target), {"pairs": 0, "escalated": 0})
            entry[field] += 1
    for entry in out.values():
        entry["share"] = round(entry["escalated"] / entry["pairs"], 4)
    return out


def commit(config: AnnotateConfig, tbl: table.AnnotationTable, rows: pa.Table, run_id: str,
           ident: str) -> int:
    """Commit one step's decisions under the table's lease (taken for the commit only: the
    steps take it for their own runs), chunk by chunk after the run's last committed chunk;
    returns the rows committed."""
    if not rows.num_rows:
        return 0
    with TableLock(config.output, config.s3, run_id, config.lock_ttl_s):
        writer = table.ChunkWriter(tbl, run_id, config.commit_rows, lineage={
            "model": ident, "tasks": ",".join(sorted(set(rows["task"].to_pylist()))),
            "input": config.input or ""})
        writer.write(rows)
        writer.flush()
    return writer.rows


def _unstage(tbl: table.AnnotationTable, run_id: str) -> None:
    fs, root = tbl._fs()
    try:
        fs.delete_dir(posixpath.join(root, STAGING, run_id))
    except (FileNotFoundError, OSError):
        pass


def render(report: dict) -> str:
    """The cascade run's summary for a terminal."""
    lines = [f"cascade {report['model']} run {report['run_id']}: {report['rows_out']} rows "
             f"committed, {report['prompts_sent']} prompts, {report['already_held']} of "
             f"{report['pairs']} pairs already decided"]
    for model, n in report["decided_by"].items():
        lines.append(f"  decided by {model}: {n}")
    for key, e in sorted(report["escalation"].items()):
        lines.append(f"  {key}: {e['escalated']} of {e['pairs']} escalated ({e['share']:.1%})")
    return "\n".join(lines)


WORST_CASE = "estimated at worst (every undecided pair reaching every model)"
"""How a cascade's budget line names its estimate: later steps are bounds, not counts."""


def plan(config: AnnotateConfig) -> dict:
    """The cascade's dry run: no engine started, nothing written (`worst_case`)."""
    steps, ident = prepare(config)
    tbl = table.AnnotationTable(config.output, config.s3)
    night = read_night(config, steps, ident, config.run_id or new_run_id(), tbl)
    return worst_case(config, steps, ident, night, tbl)


def worst_case(config: AnnotateConfig, steps: list[Step], ident: str, night: Night,
               tbl: table.AnnotationTable) -> dict:
    """What the run would send: the first step exactly (its own dry run), each later step at
    most (`bound`), and their sum, the worst case a budget is held to (`budget.check` reads
    `prompts`, `prompt_tokens`, `estimate` and `rows_to_write`: the cascade's own rows)."""
    head = night.first.dry_run() if night.pending else None  # nothing pending: no step runs
    later = [bound(config, step, tbl, night) for step in steps[1:]]
    each = ([head] if head else []) + later
    estimates = [s["estimate"] or {} for s in each]

    def total(values: list) -> float | None:
        return None if any(v is None for v in values) else round(sum(values), 4)

    return {"model": ident, "input": config.input, "output": config.output,
            "pairs": len(night.asked), "already_decided": len(night.asked) - len(night.pending),
            "rows_to_write": len(night.pending), "prompts": sum(s["prompts"] for s in each),
            "prompt_tokens": total([s["prompt_tokens"] for s in each]),
            "estimate": {"device_hours": total([e.get("device_hours") for e in estimates]),
                         "cost_usd": total([e.get("cost_usd") for e in estimates])},
            "estimated": WORST_CASE, "first_step": head, "later_steps": later}


def bound(config: AnnotateConfig, step: Step, tbl: table.AnnotationTable, night: Night
          ) -> dict:
    """The most a later step can be sent: every pair the cascade has not decided, less those
    its model already holds for tonight's text (its held check skips them), one prompt each
    (identical texts are sent once, blank ones not at all: fewer), counted with its own
    tokenizer and priced as `pipeline.Annotator.dry_run` prices."""
    from emoray.prompting import PromptFitter

    scoring = step.scoring
    held = latest(tbl, scoring.model.same_model(pads.field("model")), night.rows,
                  scoring.versions)
    send = [p for p in night.pending if p not in held or held[p]["status"] in NOT_HELD]
    try:
        fitter, note = PromptFitter.for_model(scoring.config.engine, scoring.model), None
    except Exception as e:  # a hub id without hub access: counts still, tokens not
        fitter, note = None, f"prompt tokens not counted: no tokenizer for {e}"
    tokens = sum(fitter.prompt_tokens([TASKS[t] for _, t, _ in send],
                                      [night.rows[d]["text"] or "" for d, _, _ in send],
                                      [g for _, _, g in send])) if fitter else None
    resources = engine_resources(scoring.config.engine)
    device = cost.device_of(resources)
    devices = cost.devices_per_engine(resources) * config.concurrency
    return {"model": scoring.model.identity, "pairs": len(night.pending),
            "already_held": len(night.pending) - len(send), "prompts": len(send),
            "prompt_tokens": tokens, "device": device, "devices": devices,
            "estimate": cost.estimate(tokens, config.cost, scoring.model, device == "gpu",
                                      devices) if fitter else None, "note": note}


def render_plan(p: dict) -> str:
    """A cascade's dry run as text: the first step's plan, each later step's bound, and the
    worst case the budget is held to."""
    lines = [f"dry run of cascade {p['model']} over {p['input']} -> {p['output']}: no engine "
             "started, nothing written",
             f"  pairs            {p['pairs']} ({p['already_decided']} already decided by this "
             f"cascade, {p['rows_to_write']} to decide)"]
    if p["first_step"] is None:
        return "\n".join(lines + ["  every pair is decided: no step runs"])
    lines.append(f"  {'step 1':<17}{p['first_step']['model']}: exact (its own dry run)")
    lines += ["  " + line for line in render_dry_run(p["first_step"]).splitlines()[1:]]
    for k, s in enumerate(p["later_steps"], 2):
        lines.append(f"  {f'step {k}':<17}{s['model']}: at most {s['prompts']} prompts, "
                     f"{'-' if s['prompt_tokens'] is None else s['prompt_tokens']} prompt "
                     f"tokens (all {s['pairs']} undecided pairs escalated to it, "
                     f"{s['already_held']} of them already answered by it)"
                     + (f" ({s['note']})" if s["note"] else ""))
    e = p["estimate"]
    lines.append(f"  worst case       {p['prompts']} prompts, "
                 f"{'-' if p['prompt_tokens'] is None else p['prompt_tokens']} prompt tokens"
                 + (f", {e['device_hours']:.4f} device-hours" if e["device_hours"] is not None
                    else "") + (f", ${e['cost_usd']:.2f}" if e["cost_usd"] is not None else ""))
    lines.append("  (steps after the first are upper bounds: the run sends each only the pairs "
                 "the step before it escalates)")
    return "\n".join(lines)
