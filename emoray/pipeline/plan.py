"""The plan's shapes: how tonight's rows and the stored rows they meet become the lazy Ray
dataset of prompts and then of annotation rows. Three shapes, chosen by the settings:

- **shuffle**: input and stored rows partitioned on the text hash (`shuffle_partitions`), each
  partition through the plan stages in one task; a small wave (`one_task_plan_rows`) in one
  partition instead, split again for the engines;
- **stream** (`stream_plan`): rows whose text needs no other row (`routing`) go through the
  plan stages batch by batch; only the rest wait for the shuffle;
- **waves** (`wave_rows`): the night in shares of its texts, planned and annotated in turn.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow.compute as pc

from emoray import routing, stages
from emoray.lake import key_index, locations
from emoray.contract import INPUT, PARTITION, STORED, Stage
from emoray.engines.pool import EnginePool
from emoray.pipeline.held import HeldCheck, routed, union
from emoray.pipeline.job import Job


class Plan:
    """The night's datasets: the plan of each wave and the annotation rows it becomes."""

    def __init__(self, job: Job):
        self.job = job
        self.held = HeldCheck(job)

    @functools.cached_property
    def waves(self) -> int:
        """Waves the night runs in: its input rows (`locations.estimate_rows`) over `wave_rows`,
        at least 1."""
        cfg, night = self.job.config, self.job.night
        if cfg.wave_rows is None:
            return 1
        return max(1, -(-locations.estimate_rows(night.fs, night.files) // cfg.wave_rows))

    @property
    def each_wave(self) -> list[tuple[int, int]]:
        """(wave, waves) of each of the night's waves, in the order they run."""
        return [(k, self.waves) for k in range(self.waves)]

    def texts(self):
        """Tonight's input rows after Normalize (doc_id, text, text_sha256, text_status, the
        row's own task request), one lazy Ray dataset."""
        return union(self.job.read_inputs())

    def _partitioned(self, stored, steps: list[tuple[Stage, dict]], stats=None,
                     named: np.ndarray | None = None, wave: tuple[int, int] = routing.ONE_WAVE):
        """Tonight's input of `wave` (with `named`: only its rows that take the shuffle) and
        `stored` rows partitioned on the text hash, each partition through `steps` in one
        task: Ray Data's hash shuffle over `shuffle_partitions`, or for a wave of at most
        `one_task_plan_rows` input rows (the survey's rows over the waves) one partition (its
        aggregator actors cost seconds each wave), its plan then split into as many blocks."""
        parts = self.job.read_inputs(stats, wave)
        if named is not None:
            parts = [routed(ds, named, shuffled=True) for ds in parts]
        if stored is not None:
            parts.append(stored)
        partitions = self.job.config.shuffle_partitions
        chain = {"batch_format": "pyarrow", "batch_size": None, "fn_kwargs": {"steps": steps}}
        if self.held.survey.rows / self.waves > self.job.config.one_task_plan_rows:
            return union(parts).repartition(partitions, keys=["text_sha256"]).map_batches(
                stages.run_chain, **chain)
        # a small wave: one block, one task, then split again so the engine actors share it
        return union(parts).repartition(1).map_batches(stages.run_chain, **chain
                                                       ).repartition(partitions)

    def planned(self, stats=None, wave: tuple[int, int] = routing.ONE_WAVE):
        """The lazy Ray dataset of what to ask the engine for `wave` (k, n) of the night: one
        row per distinct text and task request, with the doc_ids it answers and any stored
        answer to reuse (the stages that run on a text partition). With `stream_plan`, rows
        whose text needs no other row (`routing`) stream through those stages batch by batch;
        only the others wait for the hash shuffle."""
        context = self.job.context(stats, wave)
        steps = [(s, s.bound(context)) for s in self.job.stages if s.runs == PARTITION]
        survey = self.held.survey
        if not self.job.config.stream_plan:
            stored = self.held.stored(routing.keys_in_wave(survey.keys, *wave), wave)
            return self._partitioned(stored, steps, stats, wave=wave)
        named, branches = routing.keys_in_wave(survey.named, *wave), []
        if survey.streamed_rows:
            branches += [routed(ds, named, shuffled=False).map_batches(
                stages.run_chain, batch_format="pyarrow", batch_size=None,
                fn_kwargs={"steps": steps}) for ds in self.job.read_inputs(stats, wave)]
        if survey.shuffled_rows or not branches:
            branches.append(self._partitioned(self.held.stored(named, wave), steps,
                                              None if branches else stats, named, wave))
        return union(branches)

    def dataset(self, engines: EnginePool, stats=None, wave: tuple[int, int] = routing.ONE_WAVE):
        """The lazy Ray dataset of new annotation rows (schema `emoray.lake.table.SCHEMA`) of `wave`
        (k, n): the plan, then each stage after it in its declared order (the night's engine
        actors, `engines`, then Parse)."""
        context = {**self.job.context(stats, wave), "engines": engines}
        ds = self.planned(stats, wave)
        for s in (s for s in self.job.stages if s.runs not in (INPUT, STORED, PARTITION)):
            ds = s.apply(ds, context)
        return ds

    def missing_pairs(self) -> int:
        """Input row x task pairs the table does not hold now, under any status (this model,
        these prompt versions): counted from the committed data by the plan's own ExpandRequests
        and SkipHeld over a fresh snapshot. The run's verdict when the stages' counters (sent
        fire-and-forget, so a retried task can count twice) disagree with the rows written."""
        job, lookup = self.job, None
        if job.table.exists():
            survey = self.held.survey.unmatched()
            lookup = survey, self.held.match(survey, job.table.snapshot(), key_index.Read())
        steps = [(stages.EXPAND_REQUESTS, {"requests": job.requests, "versions": job.versions}),
                 (stages.SKIP_HELD, {"not_held": ()})]
        missing = 0
        for wave in self.each_wave:
            stored = self.held.stored(lookup[0].keys, wave, lookup) if lookup else None
            missing += sum(pc.sum(pc.equal(b["side"], "new")).as_py() or 0
                           for b in self._partitioned(stored, steps, wave=wave).iter_batches(
                               batch_format="pyarrow", batch_size=None))
        return missing
