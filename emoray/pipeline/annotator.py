"""`Annotator`: one annotate run as its callers hold it, the phases behind one face:
`prepare` (the job), `Plan` (its datasets), `dry_run`, `run`."""

from __future__ import annotations

from emoray.config import AnnotateConfig
from emoray.contract import Stage
from emoray.pipeline.dry_run import dry_run as dry_run_of
from emoray.pipeline.job import prepare
from emoray.pipeline.plan import Plan
from emoray.pipeline.report import RunSummary
from emoray.pipeline.run import Gate
from emoray.pipeline.run import run as run_plan


class Annotator:
    """A validated annotation job. Construction fails fast on bad input; `run()` does the work.

    `engine`: a stage declared with the engine's contract in place of the real one (the
    benchmark's no-op engine); `local_engine`: the engines run on this machine; `reads_for`:
    the identity whose completed nights say what `since_last` skips, when the run is a step of
    it (a cascade, which then records what it read in its own report)."""

    def __init__(self, config: AnnotateConfig, engine: Stage | None = None,
                 local_engine: bool = True, reads_for: str | None = None):
        self.job = prepare(config, engine, local_engine, reads_for)
        self.plan = Plan(self.job)
        job = self.job
        self.config, self.run_id, self.table, self.night = (job.config, job.run_id, job.table,
                                                            job.night)
        self.requests, self.model, self.versions = job.requests, job.model, job.versions
        self.stored_read = self.plan.held.read
        """What the night's held check read of the table (`key_index.scan`)."""

    @property
    def waves(self) -> int:
        return self.plan.waves

    def texts(self):
        """Tonight's input rows after Normalize, one lazy Ray dataset (`Plan.texts`)."""
        return self.plan.texts()

    def engine_wanted(self, wave: tuple[int, int] = (0, 1)) -> bool:
        return self.plan.held.engine_wanted(wave)

    def missing_pairs(self) -> int:
        return self.plan.missing_pairs()

    def dry_run(self) -> dict:
        """What `run()` would do, with no engine and nothing written (`pipeline.dry_run`)."""
        return dry_run_of(self.plan)

    def run(self, gate: Gate | None = None) -> RunSummary:
        """Execute and commit the run, its quality gate step first (`pipeline.run`)."""
        return run_plan(self.plan, gate)


def build_annotator(config: AnnotateConfig, local_engine: bool = True,
                    reads_for: str | None = None) -> Annotator:
    """Validate `config` against its input and return the job, before any engine starts."""
    return Annotator(config, local_engine=local_engine, reads_for=reads_for)
