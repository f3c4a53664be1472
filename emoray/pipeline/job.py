"""Phase one of a run: `prepare(config) -> Job`. Every check and every read that needs no engine
and no Ray happens here, once: the tasks, model, calibration and scoring rules; tonight's input
files and their columns; the output location and its table; the stage list and what each stage
takes from the run. The `Job` it returns is the frozen run context the later phases read."""

from __future__ import annotations

import functools
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.fs as pafs

from emoray import contract, routing, stages
from emoray.quality import calibration
from emoray.lake import lake_input, locations, table
from emoray.config import AnnotateConfig, ConfigError
from emoray.contract import ACTORS, Stage
from emoray.engines.stage import ENGINE, check_fits
from emoray.models import ModelSpec, resolve_model
from emoray.tasks import TASKS, TaskRequest, resolve

STAGES = (stages.NORMALIZE, stages.READ_STORED, *stages.PLAN, ENGINE, stages.PARSE)
"""The pipeline, in order; `prepare` checks the chain (`contract.check`) and the stored read
takes the columns the stages declare (`contract.stored_columns`)."""


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


@dataclass(frozen=True)
class Job:
    """A validated annotate run: its settings, stages, scoring, what tonight reads, the table it
    writes and its id. Later phases (`plan`, `run`, `dry_run`) read it and change nothing."""

    config: AnnotateConfig
    stages: tuple[Stage, ...]
    scoring: Scoring
    night: lake_input.NightInput
    """What tonight reads: files, their filesystem, a table's snapshot, what was read before."""
    table: table.AnnotationTable
    out_fs: pafs.FileSystem
    out_root: str
    run_id: str
    reads_for: str | None = None
    """The identity whose completed nights say what `since_last` skips, when the run is a step
    of it (a cascade, which records what it read in its own report)."""

    @property
    def requests(self) -> list[TaskRequest]:
        return self.scoring.requests

    @property
    def model(self) -> ModelSpec:
        return self.scoring.model

    @property
    def versions(self) -> dict[str, str]:
        return self.scoring.versions

    @property
    def calibration(self) -> calibration.Calibration | None:
        return self.scoring.calibration

    @property
    def calibration_tag(self) -> str:
        """Which calibration this run applies, as its rows record it."""
        return self.calibration.tag if self.calibration else calibration.UNCALIBRATED

    @property
    def source_record(self) -> dict[str, str]:
        """What the night read, for its commit info and report: a Delta input's table id and
        version (nothing more for files)."""
        return self.night.table.record() if self.night.table else {}

    @property
    def engine(self) -> Stage:
        """The stage that runs on engine actors."""
        return next(s for s in self.stages if s.runs == ACTORS)

    def resources(self) -> dict:
        """Ray resources of one engine actor (needs Ray started: `auto` looks for GPUs)."""
        r = self.engine.resources
        return r(self.config.engine) if callable(r) else r

    @functools.cached_property
    def plan_input(self) -> pa.Schema:
        """The plan's input schema: new rows and the stored columns the stages read."""
        return stages.plan_input(contract.stored_columns(self.stages))

    def context(self, stats=None, wave: tuple[int, int] = routing.ONE_WAVE) -> dict:
        """The run's values a stage may take, a function stage each by its parameter's name
        (`contract.check_bindings` proves every stage's parameters are among them); `engines`
        is the night's engine pool once it runs (`Plan.dataset`)."""
        cfg = self.config
        return {"id_column": cfg.id_column, "text_column": cfg.text_column,
                "task_column": cfg.task_column, "n_requests": len(self.requests),
                "stats": stats, "schema": self.plan_input, "model": self.model,
                "requests": self.requests, "versions": self.versions,
                "model_identity": self.model.identity, "run_id": self.run_id,
                "calibration": self.calibration, "wave": wave, "config": cfg,
                "engines": None}

    def read_inputs(self, stats=None, wave: tuple[int, int] = routing.ONE_WAVE) -> list:
        """The input datasets through the stages that run on input files (Normalize), which
        keep the rows of `wave` (k, n)."""
        cfg, context = self.config, self.context(stats, wave)
        datasets = locations.read_inputs(self.night.fs, self.night.files, cfg.id_column,
                                         cfg.text_column, cfg.task_column)
        for s in (s for s in self.stages if s.runs == contract.INPUT):
            datasets = [s.apply(ds, context) for ds in datasets]
        return datasets


def prepare(config: AnnotateConfig, engine: Stage | None = None, local_engine: bool = True,
            reads_for: str | None = None) -> Job:
    """Validate `config` against its input and output and return the run's `Job`, before any
    engine or Ray starts. `engine`: a stage declared with the engine's contract in place of
    `ENGINE` (the benchmark's no-op engine); `local_engine`: the engines run on this machine
    (its memory is checked for CPU engines); `reads_for`: see `Job.reads_for`."""
    run_stages = tuple(engine if s is ENGINE and engine else s for s in STAGES)
    contract.check(run_stages, table.SCHEMA.names)
    config.require("input", "output")
    locations.check_apart(config.input, config.output)
    locations.require_credentials(config.input, config.output)
    if config.cascade:
        raise ConfigError("this command does not run a cascade yet (emoray annotate does): "
                          "leave cascade empty in its profile")
    scoring = resolve_scoring(config)
    config = scoring.config
    _warn_uncalibrated(config, scoring)
    check_fits(config.engine, local=local_engine)
    night = _night(config, scoring, reads_for)
    out_fs, out_root = _output(config)
    job = Job(config, run_stages, scoring, night, table.AnnotationTable(config.output, config.s3),
              out_fs, out_root, config.run_id or new_run_id(), reads_for)
    job.table.check_layout()
    contract.check_bindings(run_stages, job.context())
    for reason in night.bad_files.values():
        print(f"emoray: skipping bad input file: {reason}", file=sys.stderr)
    return job


def _night(config: AnnotateConfig, scoring: Scoring, reads_for: str | None
           ) -> lake_input.NightInput:
    """What tonight reads (`lake_input.resolve`), its task column's values checked. With
    `since_last`, the last completed night over this input, model (or `reads_for`) and prompt
    versions says what was read (`lake_input.last_read`); `--full` reads everything."""
    columns = {"id": config.id_column, "text": config.text_column}
    if config.task_column:
        columns["task"] = config.task_column
    annotations, last = table.AnnotationTable(config.output, config.s3), None
    if config.since_last and config.incremental and annotations.exists():
        last = lake_input.last_read(table.run_reports(annotations), config,
                                    reads_for or scoring.model.identity, scoring.versions)
    night = lake_input.resolve(config, columns, last)
    if night.note:
        print(f"emoray: --since-last: {night.note}", file=sys.stderr)
    if config.task_column:
        locations.check_values(night.fs, night.files, config.task_column,
                               [r.key for r in scoring.requests])
    return night


def _output(config: AnnotateConfig) -> tuple[pafs.FileSystem, str]:
    """The output's filesystem and root, checked writable (a local folder is made)."""
    out_fs, out_root = locations.filesystem_for(config.output, config.s3)
    locations.check_output(config.output, out_fs, out_root)
    try:
        if isinstance(out_fs, pafs.LocalFileSystem):  # S3 has no folders to create
            out_fs.create_dir(out_root, recursive=True)
    except OSError as e:
        raise locations.InputError(f"cannot write to output {config.output}: {e}") from None
    return out_fs, out_root


def _warn_uncalibrated(config: AnnotateConfig, scoring: Scoring) -> None:
    """Name each class task the calibration file holds no temperature for (under this prompt
    version): its rows are marked uncalibrated."""
    if scoring.calibration is None:
        return
    for name, version in scoring.versions.items():
        if TASKS[name].answer.discrete and scoring.calibration.temperature(name, version) is None:
            print(f"emoray: calibration {config.calibration} has no temperature for task {name} "
                  f"under prompt version {version}; its confidences are marked "
                  f"{calibration.UNCALIBRATED}", file=sys.stderr)
