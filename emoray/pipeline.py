"""The annotate job as a Ray Data pipeline, built from one ordered list of declared stages
(`STAGES`, each an `emoray.contract.Stage`):

    read (Parquet/JSONL/CSV) → Normalize (id, text, hash) ──┐
    ReadStored: this model's rows (one Delta snapshot) ─────┴→ hash shuffle on text hash
      → ExpandRequests → SkipHeld → AttachReuse → GroupByText (one text-hash partition)
      → Engine (vLLM or Transformers actors) → Parse + fan out
      → one Delta commit per chunk → report

`build_annotator(config)` validates everything it can without an engine (tasks, model, input
files and their columns, output location) and returns an `Annotator`; `Annotator.run()` executes
and commits the run and returns its summary.

Rows reach the driver, which writes them in chunks, each one Delta transaction (see
`emoray.table`): rows are small (about 200 bytes), so the driver is no bottleneck, and a commit
covers exactly the rows in its files however Ray retried the batches that made them.
"""

from __future__ import annotations

import functools
import inspect
import queue
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from emoray import (
    budget,
    calibration,
    contract,
    cost,
    key_index,
    labels,
    lake_input,
    locations,
    routing,
    s3clients,
    stages,
    table,
)
from emoray.config import AnnotateConfig, ConfigError
from emoray.contract import ACTORS, INPUT, PARTITION, STORED, Stage
from emoray.cost import device_of, devices_per_engine
from emoray.engine_stage import (
    ENGINE,
    EngineClock,
    EngineStartError,
    can_host,
    check_fits,
    idle_share,
)
from emoray.engine_pool import EnginePool, call_engines, night_engines
from emoray.errors import EXIT_PARTIAL, EmorayError
from emoray.lock import TableLock
from emoray.models import ModelSpec, resolve_model
from emoray.progress import Progress
from emoray.seq2seq import Seq2SeqEngine
from emoray.tasks import TASKS, TaskRequest, resolve
from emoray.vllm_engine import Engine

ENGINES = {"vllm": Engine, "transformers": Seq2SeqEngine}
"""The engine class per `ModelSpec.engine`, chosen from the checkpoint's architecture."""
STAGES = (stages.NORMALIZE, stages.READ_STORED, *stages.PLAN, ENGINE, stages.PARSE)
"""The pipeline, in order; `build_annotator` checks the chain (`contract.check`) and the stored
read takes the columns the stages declare (`contract.stored_columns`)."""


def _union(datasets: list):
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def _routed(ds, named: np.ndarray, shuffled: bool):
    """`ds`'s rows that take the shuffle (`shuffled`) or stream (`routing.take`)."""
    return ds.map_batches(routing.take, batch_format="pyarrow", batch_size=None,
                          fn_kwargs={"named": named, "shuffled": shuffled})


class IncompleteRunError(EmorayError, RuntimeError):
    """A run committed fewer rows than its input asks for; a re-run fills the gap."""

    exit_code = EXIT_PARTIAL


class NoEngineNodeError(RuntimeError):
    """No alive node could host an engine actor for `engine_wait_s`."""


class RunStats:
    """Ray actor collecting counters from the stages (rows read, prompts sent, tokens); named
    `emoray-stats-<run_id>` so a watcher can read a live run's progress."""

    def __init__(self, meter: budget.Meter | None = None):
        self.counts: Counter = Counter()
        self.first: dict[str, float] = {}
        self.failed: str | None = None
        self.starts: list[float] = []
        self.clocks: dict[str, dict] = {}
        self.meter = meter
        self.spent: str | None = None

    def admit(self) -> bool:
        """Whether a batch may go to an engine: the run's budget (`meter`) is not yet spent.
        Once it is, no batch is admitted again; `budget_spent` says which cap."""
        if self.spent is None and self.meter is not None:
            self.spent = self.meter.reached(self.counts["prompt_tokens"], self.starts)
        return self.spent is None

    def budget_spent(self) -> str | None:
        return self.spent

    def actor_started(self, at: float) -> None:
        """An engine actor came up (it holds its devices from now to the end of its wave)."""
        self.starts.append(at)

    def actor_starts(self) -> list[float]:
        return list(self.starts)

    def engine_clock(self, actor: str, clock: dict) -> None:
        """An engine actor's latest time line (`engine_stage.EngineClock`), replacing its last."""
        self.clocks[actor] = clock

    def engine_clocks(self) -> dict[str, dict]:
        return dict(self.clocks)

    def engine_failed(self, message: str) -> None:
        """An engine could not start (`engine.start_failure`); the first one is kept."""
        self.failed = self.failed or message

    def failure(self) -> str | None:
        return self.failed

    def add(self, **counts: int) -> None:
        self.counts.update(counts)

    def mark(self, event: str) -> None:
        """Record when `event` (e.g. `first_prompt`) first happened (epoch seconds)."""
        self.first.setdefault(event, time.time())

    def get(self) -> dict:
        return dict(self.counts)

    def marks(self) -> dict[str, float]:
        return dict(self.first)


@dataclass
class RunSummary:
    run_id: str
    output: str
    rows_in: int
    rows_out: int
    requests: int
    already_held: int
    prompts_sent: int
    reused: int
    status_counts: dict[str, int]
    wall_s: float
    prompt_tokens: int
    output_tokens: int
    started_at: str
    first_prompt_s: float | None = None
    usage: dict | None = None
    """Device-seconds the engine actors held, and their cost (`emoray.cost.usage`)."""
    engine_actors: list[dict] | None = None
    """Per engine actor that answered: seconds to model loaded and to first prompt, busy,
    idle, idle share (`engine_stage.EngineClock.report`)."""
    engine_idle_share: float | None = None
    retries: dict[str, int] | None = None
    """Retries the driver made, by what was retried (`s3clients.RETRIES`); engine actors
    restarted are the report's `engine_starts` beyond one per actor."""
    waves: int = 1
    """Waves the night ran in (`wave_rows`); the engine actors serve them all."""
    stored_read: dict | None = None
    """What the held check read of the table (`key_index.Read`): files, sidecars, key rows,
    and the data files (rows) holding a match, all the stored read then reads."""
    status: str = "ok"

    @property
    def rows_per_s(self) -> float:
        return self.rows_out / self.wall_s if self.wall_s else 0.0

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["rows_per_s"] = round(self.rows_per_s, 1)
        out["wall_s"] = round(self.wall_s, 2)
        return out

    def render(self) -> str:
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(self.status_counts.items())) or "-"
        lines = [f"run {self.run_id} committed to {self.output}"]
        if self.rows_out == 0:
            lines.append(f"  nothing new: the table already holds all {self.already_held} "
                         "row x task annotations of this input")
        return "\n".join(lines + [
            f"  rows in          {self.rows_in}",
            f"  rows annotated   {self.rows_out} ({self.requests} task/target pairs per row, "
            f"{self.already_held} already in the table)",
            f"  prompts sent     {self.prompts_sent} ({self.reused} answers reused from the "
            "table; identical and blank texts sent once or not at all)",
            f"  rows per status  {statuses}",
            f"  wall time        {self.wall_s:.1f} s ({self.rows_per_s:.1f} rows/s"
            + (f"; first prompt {self.first_prompt_s:.1f} s after the start)"
               if self.first_prompt_s is not None else ")"),
            f"  tokens           {self.prompt_tokens} prompt, {self.output_tokens} generated",
        ] + ([f"  waves            {self.waves} (each a share of the texts, planned and "
              "annotated in turn)"] if self.waves > 1 else [])
            + ([render_stored_read(self.stored_read)]
               if self.stored_read and self.stored_read["table_files"] else [])
            + (["  retries          " + ", ".join(f"{k} {v}" for k, v in
                                                  sorted(self.retries.items()))]
               if self.retries else [])
            + ([render_usage(self.usage)] if self.usage else [])
            + [render_engine_actor(r) for r in self.engine_actors or []])


def render_engine_actor(r: dict) -> str:
    """One engine actor's time line: the GPU-never-waits figures."""
    share = "-" if r["idle_share"] is None else f"{r['idle_share']:.1%}"
    return (f"  engine actor     model loaded {r['load_s']} s after start, first prompt at "
            f"{r['first_prompt_s']} s; busy {r['busy_s']} s, idle {r['idle_s']} s "
            f"(idle share {share})")


def render_stored_read(r: dict) -> str:
    """The held check's line of a summary: what it read of the table."""
    return (f"  stored read      {r['matched_files']} of {r['table_files']} table files "
            f"({r['matched_rows']} rows) hold tonight's texts; the check read "
            f"{r['sidecars_read']} key sidecars ({r['key_rows']} keys, {r['sidecar_bytes']} "
            f"bytes) and {r['files_without_sidecar']} files without one")


def render_usage(usage: dict) -> str:
    """The engine-time line of a summary."""
    cost = (f"; ${usage['cost_usd']:.4f}" + (f", ${usage['usd_per_1m_rows']:.2f} per 1 M rows"
                                             if usage["usd_per_1m_rows"] is not None else "")
            if usage["cost_usd"] is not None else "; set cost.gpu_hour_usd to see dollars")
    return (f"  engine time      {usage['engine_s']:.1f} {usage['device']}-seconds held by "
            f"{usage['engines']} engine actor(s) ({usage['device_hours']:.4f} "
            f"{usage['device']}-hours{cost})")


def render_dry_run(d: dict) -> str:
    """A dry run as text: what would be read, skipped, sent and what it would cost."""
    lines = [f"dry run of {d['input']} -> {d['output']} ({d['model']}): no engine started, "
             "nothing written",
             *([f"  input            Delta table {d['input_table_id']}, version "
                f"{d['input_version']}"] if d.get("input_format") == "delta" else []),
             f"  rows in          {d['rows_in']}",
             f"  already held     {d['already_held']} of {d['pairs']} row x task pairs",
             *([f"  waves            {d['waves']} (wave_rows), served by the same engine "
                "actors"] if d["waves"] > 1 else []),
             f"  {'request':<14}{'rows':>10}{'prompts':>10}{'reused':>10}{'prompt tokens':>15}"]
    for key, r in [*d["by_request"].items(), ("total", {
            "rows": d["rows_to_write"], "prompts": d["prompts"], "reused": d["reused"],
            "prompt_tokens": d["prompt_tokens"]})]:
        tokens = "-" if d["prompt_tokens"] is None else r["prompt_tokens"]
        lines.append(f"  {key:<14}{r['rows']:>10}{r['prompts']:>10}{r['reused']:>10}"
                     f"{tokens:>15}")
    e, unit = d["estimate"], d["device"].upper()
    if d["note"]:
        lines.append(f"  ({d['note']})")
    if e and e["device_hours"] is not None:
        dollars = (f", ${e['cost_usd']:.2f}" if e["cost_usd"] is not None
                   else "; set cost.gpu_hour_usd for dollars")
        lines.append(f"  estimate         {e['device_hours']:.4f} {unit}-hours of prefill "
                     f"({e['tokens_per_s_per_device']:.0f} prompt tokens/s per {unit}, "
                     f"{e['rate_source']}), {e['hours'] * 60:.1f} min on {d['devices']} "
                     f"{unit}(s){dollars}; engine start-up not included")
    elif e is not None:
        lines.append(f"  estimate         not made for {unit} engines: set cost.tokens_per_s "
                     "(prompt_tokens / engine_s of an earlier run's report, or `emoray bench`)")
    if d["gate_skipped"]:
        lines.append("  (the quality gate is not run by a dry run)")
    return "\n".join(lines)


def new_run_id() -> str:
    """A run id: the UTC start time and 6 random hex digits (`20261206T190000Z-1a2b3c`)."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class Scoring:
    """What a run's answers are keyed and scored by: the task requests, the model, its
    calibration, the settings after the calibration's scoring rules, and each task's prompt
    version under them."""

    requests: list[TaskRequest]
    model: ModelSpec
    calibration: calibration.Calibration | None
    config: AnnotateConfig
    versions: dict[str, str]


def resolve_scoring(config: AnnotateConfig) -> Scoring:
    """`Scoring` of `config` (its tasks, `engine.model`, `calibration`), checked: no engine,
    no input read."""
    requests = resolve(config.tasks)
    model = resolve_model(config.engine.model)
    cal = calibration.load(config.calibration, config.s3, model) if config.calibration else None
    if cal:
        config = config.model_copy(update={"engine": cal.engine(config.engine)})
    expected = [t for t in config.engine.expected_score
                if t not in TASKS or TASKS[t].answer.discrete]
    if expected:
        raise ConfigError(f"engine.expected_score lists {expected}, which are not regression "
                          "tasks; regression tasks: " + ", ".join(
                              n for n, t in TASKS.items() if not t.answer.discrete))
    if config.engine.expected_score and not config.engine.confidence:
        raise ConfigError("engine.expected_score needs engine.confidence: the expected value "
                          "comes from the same digit probabilities as the confidence")
    versions = {r.task.name: config.engine.prompt_version(r.task, model.prompt_format)
                for r in requests}
    return Scoring(requests, model, cal, config, versions)


class Annotator:
    """A validated annotation job. Construction fails fast on bad input; `run()` does the work."""

    def __init__(self, config: AnnotateConfig, engine: Stage | None = None,
                 local_engine: bool = True, reads_for: str | None = None):
        """`engine`: a stage declared with the engine's contract in place of `ENGINE` (the
        benchmark's no-op engine). `reads_for`: the identity whose completed nights say what
        input `since_last` skips, when the run is a step of it (a cascade, which then records
        what it read in its own report, so this run's report marks nothing read)."""
        self.reads_for = reads_for
        self.stages = tuple(engine if s is ENGINE and engine else s for s in STAGES)
        contract.check(self.stages, table.SCHEMA.names)
        config.require("input", "output")
        locations.check_apart(config.input, config.output)
        locations.require_credentials(config.input, config.output)
        if config.cascade:
            raise ConfigError("this command does not run a cascade yet (emoray annotate does): "
                              "leave cascade empty in its profile")
        scoring = resolve_scoring(config)
        self.config = config = scoring.config
        self.requests, self.model = scoring.requests, scoring.model
        self.calibration, self.versions = scoring.calibration, scoring.versions
        self._warn_uncalibrated()
        check_fits(config.engine, local=local_engine)
        columns = {"id": config.id_column, "text": config.text_column}
        if config.task_column:
            columns["task"] = config.task_column
        self.night = lake_input.resolve(config, columns, self._last_read())
        """What tonight reads (`lake_input.NightInput`): files, their filesystem, a table's
        snapshot, what an earlier night already read."""
        self.in_fs, self.inputs, self.bad_files = (self.night.fs, self.night.files,
                                                   self.night.bad_files)
        self.source = self.night.table
        if self.night.note:
            print(f"emoray: --since-last: {self.night.note}", file=sys.stderr)
        if config.task_column:
            locations.check_values(self.in_fs, self.inputs, config.task_column,
                                   [r.key for r in self.requests])
        self.out_fs, self.out_root = locations.filesystem_for(config.output, config.s3)
        locations.check_output(config.output, self.out_fs, self.out_root)
        try:
            if isinstance(self.out_fs, pafs.LocalFileSystem):  # S3 has no folders to create
                self.out_fs.create_dir(self.out_root, recursive=True)
        except OSError as e:
            raise locations.InputError(f"cannot write to output {config.output}: {e}") from None
        self.table = table.AnnotationTable(config.output, config.s3)
        self.table.check_layout()
        self.stored_read = key_index.Read()
        """What the night's held check read of the table (`key_index.scan`)."""
        self.run_id = config.run_id or new_run_id()
        contract.check_bindings(self.stages, self._arguments())
        for reason in self.bad_files.values():
            print(f"emoray: skipping bad input file: {reason}", file=sys.stderr)

    def _last_read(self) -> dict | None:
        """With `since_last`, what the last completed night over this input, model and prompt
        versions read (`lake_input.last_read`); None reads the whole input (so does `--full`,
        which re-annotates everything)."""
        cfg = self.config
        annotations = table.AnnotationTable(cfg.output, cfg.s3)
        if not (cfg.since_last and cfg.incremental) or not annotations.exists():
            return None
        return lake_input.last_read(table.run_reports(annotations), cfg,
                                    self.reads_for or self.model.identity, self.versions)

    def _warn_uncalibrated(self) -> None:
        """Name each class task the calibration file holds no temperature for (under this
        prompt version): its rows are marked uncalibrated."""
        if self.calibration is None:
            return
        for name, version in self.versions.items():
            if TASKS[name].answer.discrete and self.calibration.temperature(name, version) is None:
                print(f"emoray: calibration {self.config.calibration} has no temperature for "
                      f"task {name} under prompt version {version}; its confidences are "
                      f"marked {calibration.UNCALIBRATED}", file=sys.stderr)

    def _arguments(self, stats=None, wave: tuple[int, int] = routing.ONE_WAVE) -> dict:
        """The run's values a stage function may take, each by its parameter's name."""
        cfg = self.config
        return {"id_column": cfg.id_column, "text_column": cfg.text_column,
                "task_column": cfg.task_column, "n_requests": len(self.requests),
                "stats": stats, "schema": self._plan_input, "model": self.model,
                "requests": self.requests, "versions": self.versions,
                "model_identity": self.model.identity, "run_id": self.run_id,
                "calibration": self.calibration, "wave": wave}

    @staticmethod
    def _kwargs(stage: Stage, arguments: dict) -> dict:
        """The `arguments` the stage's function takes (a stage declares its inputs by its
        parameters' names)."""
        params = inspect.signature(stage.fn).parameters
        return {k: v for k, v in arguments.items() if k in params}

    @functools.cached_property
    def _plan_input(self) -> pa.Schema:
        return stages.plan_input(contract.stored_columns(self.stages))

    def _inputs(self, stats=None, wave: tuple[int, int] = routing.ONE_WAVE) -> list:
        """The input datasets through the stages that run on input files (Normalize), which
        keep the rows of `wave` (k, n)."""
        cfg, arguments = self.config, self._arguments(stats, wave)
        datasets = locations.read_inputs(self.in_fs, self.inputs, cfg.id_column,
                                         cfg.text_column, cfg.task_column)
        for s in (s for s in self.stages if s.runs == INPUT):
            datasets = [ds.map_batches(s.task(), batch_format="pyarrow", batch_size=None,
                                       fn_kwargs=self._kwargs(s, arguments), **s.resources)
                        for ds in datasets]
        return datasets

    def texts(self):
        """Tonight's input rows after Normalize (doc_id, text, text_sha256, text_status, the
        row's own task request), one lazy Ray dataset."""
        return _union(self._inputs())

    def _stored(self, named: np.ndarray, wave: tuple[int, int] = routing.ONE_WAVE,
                lookup: tuple[routing.Survey, key_index.Matched] | None = None):
        """The stored annotations a plan can use, as plan input (side "old"), or None when no
        stored row can match: of the snapshot the survey matched (`lookup`: a survey and its
        matched files' fragments; default the run's), only the data files whose key index holds
        a key in `named` of `wave` (or, in wave 0, stored rows without a hash), read through
        that snapshot's dataset (its schema, partitions and statistics, as `read_delta` does),
        rows of this model under tonight's prompt versions whose key is in `named` (or is
        null); the columns the stages declare (`Stage.stored`) that the table has (an older
        table lacks newer ones)."""
        import ray.data
        from ray.data._internal.datasource.parquet_datasource import ParquetDatasource

        if lookup is None and not self._holds_answers:
            return None
        survey, matched = lookup or (self._survey, self._matched)
        files = survey.files_for(named, wave)
        if not files:
            return None
        subset = matched.dataset(files)
        columns = [c for c in contract.stored_columns(self.stages) if c in subset.schema.names]
        ds = ray.data.read_datasource(ParquetDatasource.from_pyarrow_dataset(
            subset, columns=columns, to_batch_kwargs={"filter": self._held}))
        arguments = self._arguments()
        for s in (s for s in self.stages if s.runs == STORED):
            ds = ds.map_batches(s.task(), batch_format="pyarrow", batch_size=None,
                                fn_kwargs=self._kwargs(s, arguments), **s.resources)
        if wave[1] > 1:
            ds = ds.map_batches(routing.in_wave, batch_format="pyarrow", batch_size=None,
                                fn_args=wave)
        return _routed(ds, named, shuffled=True)

    @functools.cached_property
    def _snapshot(self):
        """The one table snapshot the plan's stored read and the engine decision both read
        (its Delta log loaded once)."""
        return self.table.snapshot()

    @functools.cached_property
    def _held(self) -> pads.Expression:
        """Stored rows of this model under tonight's prompt versions."""
        return table.held_filter(self.model.same_model(pads.field("model")), self.versions)

    @functools.cached_property
    def _holds_answers(self) -> bool:
        """Whether the table holds answers of this model under tonight's prompt versions."""
        if not self.config.incremental or not self.table.exists():
            return False
        fragments = self._snapshot.to_pyarrow_dataset().get_fragments(filter=self._held)
        return next(iter(fragments), None) is not None

    @functools.cached_property
    def _survey(self) -> routing.Survey:
        """Tonight's text hash keys (a pass over the input, 8 bytes a row reach the driver)
        and, when the table holds answers, which of them it holds (from the table's key index,
        `_matched`): what streams and what takes the shuffle (`routing`)."""
        keys = _union(self._inputs()).map_batches(routing.batch_keys, batch_format="pyarrow",
                                                  batch_size=None)
        survey = routing.Survey.of(keys.iter_batches(batch_format="pyarrow", batch_size=None))
        if self._holds_answers:
            self._matched = self._match(survey, self._snapshot, self.stored_read)
        return survey

    def _match(self, survey: routing.Survey, snapshot,
               read: key_index.Read) -> key_index.Matched:
        """`key_index.match` of `survey` against `snapshot`, this model's rows under tonight's
        prompt versions."""
        fs, root = self.table._fs()
        return key_index.match(snapshot, fs, root, self._held, survey, self.requests, read)

    def engine_wanted(self, wave: tuple[int, int] = routing.ONE_WAVE) -> bool:
        """Whether some text of tonight's input (in `wave`) lacks a stored answer for some
        request, so prompts will be sent: then the engine actors load the model as the run (or
        the wave) starts, while planning runs. Decided on the survey's compact key set before
        any engine starts; when not wanted (a night, or a wave, with nothing new) an engine
        still starts lazily should a prompt arrive."""
        return not self._holds_answers or self._survey.prompts_wanted(wave)

    def _partitioned(self, stored, steps: list[tuple[Stage, dict]], stats=None,
                     named: np.ndarray | None = None, wave: tuple[int, int] = routing.ONE_WAVE):
        """Tonight's input of `wave` (with `named`: only its rows that take the shuffle) and
        `stored` rows partitioned on the text hash, each partition through `steps` in one
        task: Ray Data's hash shuffle over `shuffle_partitions`, or for a wave of at most
        `one_task_plan_rows` input rows (the survey's rows over the waves) one partition (its
        aggregator actors cost seconds each wave), its plan then split into as many blocks."""
        parts = self._inputs(stats, wave)
        if named is not None:
            parts = [_routed(ds, named, shuffled=True) for ds in parts]
        if stored is not None:
            parts.append(stored)
        partitions = self.config.shuffle_partitions
        if self._survey.rows / self.waves > self.config.one_task_plan_rows:
            return _union(parts).repartition(partitions, keys=["text_sha256"]).map_batches(
                stages.run_chain, batch_format="pyarrow", batch_size=None,
                fn_kwargs={"steps": steps})
        # a small wave: one block, one task, then split again so the engine actors share it
        return _union(parts).repartition(1).map_batches(
            stages.run_chain, batch_format="pyarrow", batch_size=None,
            fn_kwargs={"steps": steps}).repartition(partitions)

    def planned(self, stats=None, wave: tuple[int, int] = routing.ONE_WAVE):
        """The lazy Ray dataset of what to ask the engine for `wave` (k, n) of the night: one
        row per distinct text and task request, with the doc_ids it answers and any stored
        answer to reuse (the stages that run on a text partition). With `stream_plan`, rows
        whose text needs no other row (`routing`) stream through those stages batch by batch;
        only the others wait for the hash shuffle."""
        arguments = self._arguments(stats, wave)
        steps = [(s, self._kwargs(s, arguments)) for s in self.stages if s.runs == PARTITION]
        if not self.config.stream_plan:
            stored = self._stored(routing.keys_in_wave(self._survey.keys, *wave), wave)
            return self._partitioned(stored, steps, stats, wave=wave)
        survey = self._survey
        named, branches = routing.keys_in_wave(survey.named, *wave), []
        if survey.streamed_rows:
            branches += [_routed(ds, named, shuffled=False).map_batches(
                stages.run_chain, batch_format="pyarrow", batch_size=None,
                fn_kwargs={"steps": steps}) for ds in self._inputs(stats, wave)]
        if survey.shuffled_rows or not branches:
            branches.append(self._partitioned(self._stored(named, wave), steps,
                                              None if branches else stats, named, wave))
        return _union(branches)

    @functools.cached_property
    def waves(self) -> int:
        """Waves the night runs in: its input rows (`locations.estimate_rows`) over `wave_rows`,
        at least 1."""
        if self.config.wave_rows is None:
            return 1
        rows = locations.estimate_rows(self.in_fs, self.inputs)
        return max(1, -(-rows // self.config.wave_rows))

    @property
    def _each_wave(self) -> list[tuple[int, int]]:
        """(wave, waves) of each of the night's waves, in the order they run."""
        return [(k, self.waves) for k in range(self.waves)]

    def missing_pairs(self) -> int:
        """Input row x task pairs the table does not hold now, under any status (this model,
        these prompt versions): counted from the committed data by the plan's own ExpandRequests
        and SkipHeld over a fresh snapshot. The run's verdict when the stages' counters (sent
        fire-and-forget, so a retried task can count twice) disagree with the rows written."""
        lookup = None
        if self.table.exists():
            survey = self._survey.unmatched()
            lookup = survey, self._match(survey, self.table.snapshot(), key_index.Read())
        steps = [(stages.EXPAND_REQUESTS, {"requests": self.requests, "versions": self.versions}),
                 (stages.SKIP_HELD, {"not_held": ()})]
        missing = 0
        for wave in self._each_wave:
            stored = (self._stored(lookup[0].keys, wave, lookup) if lookup is not None
                      else None)
            missing += sum(pc.sum(pc.equal(b["side"], "new")).as_py() or 0
                           for b in self._partitioned(stored, steps, wave=wave).iter_batches(
                               batch_format="pyarrow", batch_size=None))
        return missing

    def dataset(self, engines: EnginePool, stats=None,
                wave: tuple[int, int] = routing.ONE_WAVE):
        """The lazy Ray dataset of new annotation rows (schema `emoray.table.SCHEMA`) of `wave`
        (k, n): the plan, then the stages after it (the night's engine actors, `engines`, then
        Parse)."""
        cfg, arguments = self.config, self._arguments(stats, wave)
        ds = self.planned(stats, wave)
        placed = {INPUT, STORED, PARTITION}
        for s in (s for s in self.stages if s.runs not in placed):
            if s.runs == ACTORS:
                ds = ds.map_batches(
                    call_engines, batch_format="pyarrow", batch_size=cfg.batch_size,
                    fn_kwargs={"actors": engines.actors, "stats": stats,
                               "budgeted": cfg.budget.is_set()},
                    concurrency=cfg.concurrency * cfg.batches_in_flight, num_cpus=0)
            else:
                ds = ds.map_batches(s.task(), batch_format="pyarrow", batch_size=None,
                                    fn_kwargs=self._kwargs(s, arguments), **s.resources)
        return ds

    def engines(self, stats=None):
        """The night's engine actors (`engine_pool.night_engines`: kept warm ones, or new
        ones), loading the model as the night starts when some wave has prompts to send
        (`engine_wanted`), so the load overlaps planning."""
        engine = next(s for s in self.stages if s.runs == ACTORS)
        return night_engines(
            engine, {"config": self.config.engine, "engine_class": ENGINES[self.model.engine],
                     **engine.args},
            self.resources(), self.config.concurrency, self.config.batches_in_flight,
            stats=stats, eager=any(self.engine_wanted(w) for w in self._each_wave))

    def _watched(self, batches: Iterator[pa.Table]) -> Iterator[pa.Table]:
        """`batches`, pulled by a thread so the driver can see when no alive node could host an
        engine actor (its nodes lost, none added by an autoscaler) for `engine_wait_s`, and fail
        the run then (`NoEngineNodeError`): Ray itself waits for such a node forever. However
        the driver stops reading, the thread then closes `batches`, which ends Ray Data's
        execution and frees its actors."""
        resources, wait = self.resources(), self.config.engine_wait_s
        handoff: queue.Queue = queue.Queue(maxsize=2)
        stop, end = threading.Event(), object()

        def offer(item) -> bool:
            while not stop.is_set():
                try:
                    handoff.put(item, timeout=1)
                    return True
                except queue.Full:
                    continue
            return False

        def pull() -> None:
            try:
                for batch in batches:
                    if not offer(batch):
                        return
                offer(end)
            except BaseException as e:  # handed to the driver, which raises it
                offer(e)
            finally:
                close = getattr(batches, "close", None)
                if close is not None:
                    close()

        threading.Thread(target=pull, daemon=True, name=f"emoray-{self.run_id}").start()
        lost_since = None
        try:
            while True:
                try:
                    item = handoff.get(timeout=min(5.0, wait))
                except queue.Empty:
                    if self._hostable(resources):
                        lost_since = None
                    elif time.monotonic() - (lost_since := lost_since or time.monotonic()) > wait:
                        raise NoEngineNodeError(
                            f"no alive Ray node offers what an engine actor needs ({resources}) "
                            f"for {wait:g} s (engine_wait_s): the cluster lost its engine nodes, "
                            "or no autoscaler adds them.") from None
                    continue
                lost_since = None
                if item is end:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    @staticmethod
    def _hostable(resources: dict) -> bool:
        """`can_host`, taking a failed look at the cluster (a busy GCS) as a node found."""
        try:
            return can_host(resources)
        except Exception:
            return True

    def resources(self) -> dict:
        """Ray resources of one engine actor (needs Ray started: `auto` looks for GPUs)."""
        engine = next(s for s in self.stages if s.runs == ACTORS)
        return (engine.resources(self.config.engine) if callable(engine.resources)
                else engine.resources)

    @property
    def _source_record(self) -> dict[str, str]:
        """What the night read, for its commit info and report: a Delta input's table id and
        version (nothing more for files)."""
        return self.source.record() if self.source else {}

    def _calibration_tag(self) -> str:
        """Which calibration this run applies, as its rows record it."""
        return self.calibration.tag if self.calibration else calibration.UNCALIBRATED

    def dry_run(self) -> dict:
        """What `run()` would do, with no engine and nothing written: rows in, row x task pairs
        already held, per task request the rows to write, prompts to send, stored answers to
        reuse and prompt tokens (the checkpoint's tokenizer, the engine's truncation rule),
        and the estimated device-hours and cost (`emoray.cost`)."""
        import ray

        from emoray.prompting import PromptFitter

        stats = ray.remote(RunStats).options(num_cpus=0).remote()
        try:
            fitter = PromptFitter.for_model(self.config.engine, self.model)
        except Exception as e:  # a hub id without hub access: counts still, tokens not
            fitter, note = None, f"prompt tokens not counted: no tokenizer for {e}"
        else:
            note = None
        by_request: dict[str, Counter] = {r.key: Counter() for r in self.requests}
        keys = {(r.task.name, r.target): r.key for r in self.requests}
        for batch in (b for wave in self._each_wave for b in self.planned(
                stats, wave).iter_batches(batch_format="pyarrow", batch_size=None)):
            rows = batch.select(["task", "target", "text", "text_status", "cached_output",
                                 "doc_ids"]).to_pylist()
            send = [r for r in rows if stages.sends_prompt(r["text_status"], r["cached_output"])]
            tokens = (fitter.prompt_tokens([TASKS[r["task"]] for r in send],
                                           [r["text"] for r in send], [r["target"] for r in send])
                      if fitter else [0] * len(send))
            for r in rows:
                by_request[keys[r["task"], r["target"]]].update(
                    rows=len(r["doc_ids"]), reused=int(r["cached_output"] is not None))
            for r, n in zip(send, tokens):
                by_request[keys[r["task"], r["target"]]].update(prompts=1, prompt_tokens=n)
        counts = ray.get(stats.get.remote())
        ray.kill(stats)
        totals = sum(by_request.values(), Counter())
        resources = self.resources()
        devices = devices_per_engine(resources) * self.config.concurrency
        return {
            "input": self.config.input, **self._source_record, "output": self.config.output,
            "model": self.model.identity,
            "rows_in": counts.get("rows_in", 0), "pairs": counts.get("pairs", 0),
            "waves": self.waves,
            "already_held": counts.get("pairs", 0) - totals["rows"],
            "rows_to_write": totals["rows"], "prompts": totals["prompts"],
            "reused": totals["reused"],
            "prompt_tokens": totals["prompt_tokens"] if fitter else None,
            "by_request": {k: {f: v.get(f, 0) for f in ("rows", "prompts", "reused",
                                                        "prompt_tokens")}
                           for k, v in by_request.items()},
            "device": device_of(resources), "devices": devices,
            "estimate": cost.estimate(totals["prompt_tokens"], self.config.cost, self.model,
                                      device_of(resources) == "gpu", devices)
            if fitter else None,
            "note": note, "gate_skipped": self.config.gate.enabled,
        }

    def run(self, gate: Callable[[AnnotateConfig, str], dict] | None = None) -> RunSummary:
        """Under the table's lease: the quality gate step (`gate`, e.g. `gate.run_gate`, which
        the job passes when `gate.enabled`; run once the lease is held, so a run refused for a
        held lease spends no canary), then execute, committing chunk by chunk, then write the
        run report."""
        if self.config.gate.enabled and gate is None:
            raise ConfigError("gate.enabled is set but this job passed no gate step: run it "
                              "with emoray.gate.gated_run, or set gate.enabled false")
        with TableLock(self.config.output, self.config.s3, self.run_id,
                       self.config.lock_ttl_s) as lease:
            report = gate(self.config, self.run_id) if self.config.gate.enabled else None
            return self._run(lease, report)

    def _run(self, lease: TableLock, gate: dict | None) -> RunSummary:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        retried = Counter(s3clients.RETRIES)
        if self.bad_files and self.config.on_bad_file == "quarantine":
            locations.quarantine(self.in_fs, list(self.bad_files), self.out_fs,
                                 f"{self.out_root}/_quarantine/{self.run_id}")
        meter = budget.Meter(self.config.budget, devices_per_engine(self.resources()),
                             self.config.cost.gpu_hour_usd)
        stats = ray.remote(RunStats).options(
            num_cpus=0, name=f"emoray-stats-{self.run_id}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(  # lives and dies with the driver
                ray.get_runtime_context().get_node_id(), soft=False)).remote(meter)
        writer = table.ChunkWriter(self.table, self.run_id, self.config.commit_rows, lineage={
            "model": self.model.identity, "tasks": ",".join(r.key for r in self.requests),
            "input": self.config.input, "engine": self.model.engine,
            "calibration": self._calibration_tag(), **self._source_record})
        label_stats = labels.LabelStats()
        with Progress(lambda: ray.get(stats.get.remote(), timeout=10),
                      self.config.progress_interval_s, waves=self.waves) as progress:
            try:
                progress.note("checking the table: tonight's keys against its key index")
                self._survey  # noqa: B018 (the held check, before any engine starts)
                progress.note(None)
                with self.engines(stats) as engines:
                    for wave in self._each_wave:
                        if wave[0]:
                            progress.next_wave()
                        for batch in self._watched(self.dataset(engines, stats, wave)
                                                   .iter_batches(batch_format="pyarrow",
                                                                 batch_size=None)):
                            lease.check()
                            writer.write(batch)
                            label_stats.add(batch)
                            progress.add(batch.num_rows, table.status_counts(batch))
                        writer.flush()  # a finished wave is committed whatever the next meets
                    ended = time.time()
            except Exception as e:
                lost = isinstance(e, NoEngineNodeError)  # the engine ran; its nodes went
                failure = str(e) if lost else ray.get(stats.failure.remote())
                ray.kill(stats)  # named after the run: a resumed run in this process makes its own
                if failure is None:
                    raise
                if lost or writer.chunks > writer.first_chunk:
                    raise IncompleteRunError(
                        f"{failure} The run committed {writer.rows} rows before that; they "
                        "stand, and a re-run completes the table.") from None
                raise EngineStartError(failure) from None
        counts = ray.get(stats.get.remote())
        first_prompt = ray.get(stats.marks.remote()).get("first_prompt")
        starts = ray.get(stats.actor_starts.remote())
        clocks = ray.get(stats.engine_clocks.remote())
        spent = ray.get(stats.budget_spent.remote())
        ray.kill(stats)
        resources = self.resources()
        engines = [EngineClock(**c).report(ended) for _, c in sorted(clocks.items())]
        usage = {**cost.usage(sum(ended - t for t in starts)
                              * devices_per_engine(resources), writer.rows, self.config.cost),
                 "device": device_of(resources), "engines": len(starts)}
        summary = RunSummary(
            run_id=self.run_id, output=self.config.output, rows_in=counts.get("rows_in", 0),
            rows_out=writer.rows, requests=len(self.requests),
            already_held=counts.get("already_held", 0),
            prompts_sent=counts.get("prompts", 0), reused=counts.get("reused", 0),
            status_counts=dict(writer.status_counts), wall_s=time.perf_counter() - t0,
            prompt_tokens=counts.get("prompt_tokens", 0),
            output_tokens=counts.get("output_tokens", 0), started_at=started.isoformat(),
            first_prompt_s=(round(first_prompt - started.timestamp(), 2)
                            if first_prompt is not None else None),
            usage=usage, engine_actors=engines, engine_idle_share=idle_share(engines),
            retries=dict(s3clients.RETRIES - retried), waves=self.waves,
            stored_read=self.stored_read.as_dict(),
        )
        expected = counts.get("pairs", 0) - summary.already_held
        missing = None if summary.rows_out == expected else self.missing_pairs()
        summary.status = "budget_spent" if spent else "incomplete" if missing else "ok"
        table.write_report(self.table, {
            **summary.as_dict(), "model": self.model.identity, "model_source": self.model.source,
            "tasks": [r.key for r in self.requests], "input": self.config.input,
            **self._source_record, "calibration": self._calibration_tag(),
            "prompt_versions": self.versions,
            **({"input_read": self.night.read} if self.reads_for is None else {}),
            "input_files_read": len(self.inputs), "input_files_skipped": self.night.skipped, "chunks": writer.chunks - writer.first_chunk,
            "bad_files": self.bad_files,
            "engine_starts": counts.get("engine_starts", 0), "gate": gate,
            "missing_pairs": missing, "budget_spent": spent,
            "label_report": labels.write_label_report(self.out_fs, self.out_root, self.run_id,
                                                      self.model.identity, label_stats)})
        if spent:
            raise budget.BudgetSpent(
                f"budget spent ({spent}): run {self.run_id} committed {summary.rows_out} rows "
                f"and left {missing} input row x task pairs unanswered; the next run continues "
                "with them (raise the budget to finish sooner)")
        if summary.status != "ok":
            raise IncompleteRunError(
                f"run {self.run_id} left {missing} input row x task pairs without a row in the "
                f"table (counted from the committed data; the run wrote {summary.rows_out} "
                f"rows); the committed chunks stand and a re-run fills the gap")
        return summary


def build_annotator(config: AnnotateConfig, local_engine: bool = True,
                    reads_for: str | None = None) -> Annotator:
    """Validate `config` against its input and return the job, before any engine starts;
    `local_engine`: the engines run on this machine (its memory is checked for CPU engines);
    `reads_for`: see `Annotator`."""
    return Annotator(config, local_engine=local_engine, reads_for=reads_for)
