"""The run: under the table's lease, the quality gate step, the night's engine actors, the write
loop (one Delta commit per chunk, wave by wave, watched for lost engine nodes), then the verdict
(every pair answered, or how many are missing) and the run report.

Rows reach the driver, which writes them in chunks, each one Delta transaction (see
`emoray.lake.table`): rows are small (about 200 bytes), so the driver is no bottleneck, and a commit
covers exactly the rows in its files however Ray retried the batches that made them."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from emoray import budget, cost
from emoray.quality import labels
from emoray.lake import locations, s3clients, table
from emoray.config import AnnotateConfig, ConfigError
from emoray.cost import device_of, devices_per_engine
from emoray.engines import ENGINES
from emoray.engines.pool import night_engines
from emoray.engines.stage import EngineClock, EngineStartError, idle_share
from emoray.errors import EXIT_PARTIAL, EmorayError
from emoray.lake.lock import TableLock
from emoray.pipeline.plan import Plan
from emoray.pipeline.report import RunSummary
from emoray.pipeline.stats import RunStats
from emoray.pipeline.watchdog import NoEngineNodeError, watched
from emoray.progress import Progress


class IncompleteRunError(EmorayError, RuntimeError):
    """A run committed fewer rows than its input asks for; a re-run fills the gap."""

    exit_code = EXIT_PARTIAL


Gate = Callable[[AnnotateConfig, str], dict]
"""A quality gate step (`gate.run_gate`): the run's config and id to its report."""


def run(plan: Plan, gate: Gate | None = None) -> RunSummary:
    """Under the table's lease: the quality gate step (`gate`, which the job passes when
    `gate.enabled`; run once the lease is held, so a run refused for a held lease spends no
    canary), then execute, committing chunk by chunk, then write the run report."""
    cfg, run_id = plan.job.config, plan.job.run_id
    if cfg.gate.enabled and gate is None:
        raise ConfigError("gate.enabled is set but this job passed no gate step: run it "
                          "with emoray.quality.gate.gated_run, or set gate.enabled false")
    with TableLock(cfg.output, cfg.s3, run_id, cfg.lock_ttl_s) as lease:
        report = gate(cfg, run_id) if cfg.gate.enabled else None
        return _Run(plan, lease).execute(report)


@dataclass
class _Outcome:
    """What the run's stats actor knew at the end."""

    counts: dict
    first_prompt: float | None
    starts: list[float]
    clocks: dict[str, dict]
    spent: str | None


class _Run:
    """One execution of a plan under a held lease."""

    def __init__(self, plan: Plan, lease: TableLock):
        self.plan, self.job, self.lease = plan, plan.job, lease
        self.label_stats = labels.LabelStats()

    def _writer(self) -> table.ChunkWriter:
        """The run's chunk writer (it creates the table if need be, within the run's clock)."""
        job = self.job
        return table.ChunkWriter(job.table, job.run_id, job.config.commit_rows, lineage={
            "model": job.model.identity, "tasks": ",".join(r.key for r in job.requests),
            "input": job.config.input, "engine": job.model.engine,
            "calibration": job.calibration_tag, **job.source_record})

    def execute(self, gate: dict | None) -> RunSummary:
        """Run every wave, then judge and report."""
        import ray

        job, started, t0 = self.job, datetime.now(timezone.utc), time.perf_counter()
        retried = Counter(s3clients.RETRIES)
        if job.night.bad_files and job.config.on_bad_file == "quarantine":
            locations.quarantine(job.night.fs, list(job.night.bad_files), job.out_fs,
                                 f"{job.out_root}/_quarantine/{job.run_id}")
        stats = self._stats()
        try:
            self.writer = self._writer()
        except BaseException:
            ray.kill(stats)
            raise
        ended = self._write_all(stats)
        outcome = _Outcome(ray.get(stats.get.remote()), ray.get(stats.marks.remote()).get(
            "first_prompt"), ray.get(stats.actor_starts.remote()),
            ray.get(stats.engine_clocks.remote()), ray.get(stats.budget_spent.remote()))
        ray.kill(stats)
        summary = self._summary(outcome, started, ended, time.perf_counter() - t0)
        summary.retries = dict(s3clients.RETRIES - retried)
        return self._verdict(summary, outcome, gate)

    def _stats(self):
        """The run's stats actor, holding its budget's meter; it lives and dies with the
        driver's node."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cfg = self.job.config
        meter = budget.Meter(cfg.budget, devices_per_engine(self.job.resources()),
                             cfg.cost.gpu_hour_usd)
        return ray.remote(RunStats).options(
            num_cpus=0, name=f"emoray-stats-{self.job.run_id}",
            scheduling_strategy=NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False)).remote(meter)

    def _engines(self, stats):
        """The night's engine actors (`engines.pool.night_engines`: kept warm ones, or new
        ones), loading the model as the night starts when some wave has prompts to send
        (`HeldCheck.engine_wanted`), so the load overlaps planning."""
        job, plan = self.job, self.plan
        return night_engines(
            job.engine, {"config": job.config.engine, "engine_class": ENGINES[job.model.engine],
                         **job.engine.args},
            job.resources(), job.config.concurrency, job.config.batches_in_flight,
            stats=stats, eager=any(plan.held.engine_wanted(w) for w in plan.each_wave))

    def _write_all(self, stats) -> float:
        """Each wave's rows committed chunk by chunk as they arrive; the end time. A failure
        becomes the error that says what stands (`_failed`)."""
        import ray

        job, plan = self.job, self.plan
        with Progress(lambda: ray.get(stats.get.remote(), timeout=10),
                      job.config.progress_interval_s, waves=plan.waves) as progress:
            try:
                progress.note("checking the table: tonight's keys against its key index")
                plan.held.survey  # noqa: B018 (the held check, before any engine starts)
                progress.note(None)
                with self._engines(stats) as engines:
                    for wave in plan.each_wave:
                        if wave[0]:
                            progress.next_wave()
                        batches = plan.dataset(engines, stats, wave).iter_batches(
                            batch_format="pyarrow", batch_size=None)
                        for batch in watched(batches, job.resources(), job.config.engine_wait_s,
                                             f"emoray-{job.run_id}"):
                            self.lease.check()
                            self.writer.write(batch)
                            self.label_stats.add(batch)
                            progress.add(batch.num_rows, table.status_counts(batch))
                        self.writer.flush()  # a finished wave is committed whatever comes next
                    return time.time()
            except Exception as e:
                self._failed(e, stats)
                raise

    def _failed(self, error: Exception, stats) -> None:
        """Turn an engine's failure into the error a user acts on: the engine never started
        (`EngineStartError`), or it failed after chunks were committed, which stand
        (`IncompleteRunError`); other errors go on as they are."""
        import ray

        lost = isinstance(error, NoEngineNodeError)  # the engine ran; its nodes went
        failure = str(error) if lost else ray.get(stats.failure.remote())
        ray.kill(stats)  # named after the run: a resumed run in this process makes its own
        if failure is None:
            return
        w = self.writer
        if lost or w.chunks > w.first_chunk:
            raise IncompleteRunError(
                f"{failure} The run committed {w.rows} rows before that; they stand, and a "
                "re-run completes the table.") from None
        raise EngineStartError(failure) from None

    def _summary(self, o: _Outcome, started: datetime, ended: float, wall_s: float) -> RunSummary:
        """The run's summary from its stats and its writer."""
        job, w = self.job, self.writer
        resources = job.resources()
        engines = [EngineClock(**c).report(ended) for _, c in sorted(o.clocks.items())]
        usage = {**cost.usage(sum(ended - t for t in o.starts) * devices_per_engine(resources),
                              w.rows, job.config.cost),
                 "device": device_of(resources), "engines": len(o.starts)}
        return RunSummary(
            run_id=job.run_id, output=job.config.output, rows_in=o.counts.get("rows_in", 0),
            rows_out=w.rows, requests=len(job.requests),
            already_held=o.counts.get("already_held", 0),
            prompts_sent=o.counts.get("prompts", 0), reused=o.counts.get("reused", 0),
            status_counts=dict(w.status_counts), wall_s=wall_s,
            prompt_tokens=o.counts.get("prompt_tokens", 0),
            output_tokens=o.counts.get("output_tokens", 0), started_at=started.isoformat(),
            first_prompt_s=(round(o.first_prompt - started.timestamp(), 2)
                            if o.first_prompt is not None else None),
            usage=usage, engine_actors=engines, engine_idle_share=idle_share(engines),
            waves=self.plan.waves, stored_read=self.plan.held.read.as_dict())

    def _verdict(self, summary: RunSummary, o: _Outcome, gate: dict | None) -> RunSummary:
        """Count what is missing when the counters disagree with the rows written, write the
        run report, and end: the summary, or the error for a spent budget or a gap."""
        job = self.job
        expected = o.counts.get("pairs", 0) - summary.already_held
        missing = None if summary.rows_out == expected else self.plan.missing_pairs()
        summary.status = "budget_spent" if o.spent else "incomplete" if missing else "ok"
        table.write_report(job.table, {
            **summary.as_dict(), "model": job.model.identity, "model_source": job.model.source,
            "tasks": [r.key for r in job.requests], "input": job.config.input,
            **job.source_record, "calibration": job.calibration_tag,
            "prompt_versions": job.versions,
            **({"input_read": job.night.read} if job.reads_for is None else {}),
            "input_files_read": len(job.night.files), "input_files_skipped": job.night.skipped,
            "chunks": self.writer.chunks - self.writer.first_chunk,
            "bad_files": job.night.bad_files,
            "engine_starts": o.counts.get("engine_starts", 0), "gate": gate,
            "missing_pairs": missing, "budget_spent": o.spent,
            "label_report": labels.write_label_report(job.out_fs, job.out_root, job.run_id,
                                                      job.model.identity, self.label_stats)})
        if o.spent:
            raise budget.BudgetSpent(
                f"budget spent ({o.spent}): run {job.run_id} committed {summary.rows_out} rows "
                f"and left {missing} input row x task pairs unanswered; the next run continues "
                "with them (raise the budget to finish sooner)")
        if summary.status != "ok":
            raise IncompleteRunError(
                f"run {job.run_id} left {missing} input row x task pairs without a row in the "
                f"table (counted from the committed data; the run wrote {summary.rows_out} "
                f"rows); the committed chunks stand and a re-run fills the gap")
        return summary
