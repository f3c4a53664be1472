"""The held check: which of tonight's texts the table already answers, read from one table
snapshot through its key index (`emoray.lake.key_index`), before any engine starts. It decides what
streams and what takes the shuffle (`routing.Survey`), which stored rows the plan reads, and
whether the engine is wanted at all."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow.dataset as pads

from emoray import contract, routing
from emoray.lake import key_index, table
from emoray.contract import STORED
from emoray.pipeline.job import Job


def union(datasets: list):
    """One Ray dataset of `datasets`."""
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def routed(ds, named: np.ndarray, shuffled: bool):
    """`ds`'s rows that take the shuffle (`shuffled`) or stream (`routing.take`)."""
    return ds.map_batches(routing.take, batch_format="pyarrow", batch_size=None,
                          fn_kwargs={"named": named, "shuffled": shuffled})


class HeldCheck:
    """What the table holds of tonight's input for this model and these prompt versions."""

    def __init__(self, job: Job):
        self.job = job
        self.read = key_index.Read()
        """What the check read of the table (`key_index.scan`), for the run's report."""

    @functools.cached_property
    def snapshot(self):
        """The one table snapshot the plan's stored read and the engine decision both read
        (its Delta log loaded once)."""
        return self.job.table.snapshot()

    @functools.cached_property
    def held(self) -> pads.Expression:
        """Stored rows of this model under tonight's prompt versions."""
        return table.held_filter(self.job.model.same_model(pads.field("model")),
                                 self.job.versions)

    @functools.cached_property
    def holds_answers(self) -> bool:
        """Whether the table holds answers of this model under tonight's prompt versions."""
        if not self.job.config.incremental or not self.job.table.exists():
            return False
        fragments = self.snapshot.to_pyarrow_dataset().get_fragments(filter=self.held)
        return next(iter(fragments), None) is not None

    @functools.cached_property
    def survey(self) -> routing.Survey:
        """Tonight's text hash keys (a pass over the input, 8 bytes a row reach the driver)
        and, when the table holds answers, which of them it holds (from the table's key index,
        `matched`): what streams and what takes the shuffle (`routing`)."""
        keys = union(self.job.read_inputs()).map_batches(
            routing.batch_keys, batch_format="pyarrow", batch_size=None)
        survey = routing.Survey.of(keys.iter_batches(batch_format="pyarrow", batch_size=None))
        if self.holds_answers:
            self.matched = self.match(survey, self.snapshot, self.read)
        return survey

    def match(self, survey: routing.Survey, snapshot, read: key_index.Read) -> key_index.Matched:
        """`key_index.match` of `survey` against `snapshot`, this model's rows under tonight's
        prompt versions."""
        fs, root = self.job.table._fs()
        return key_index.match(snapshot, fs, root, self.held, survey, self.job.requests, read)

    def engine_wanted(self, wave: tuple[int, int] = routing.ONE_WAVE) -> bool:
        """Whether some text of tonight's input (in `wave`) lacks a stored answer for some
        request, so prompts will be sent: then the engine actors load the model as the run (or
        the wave) starts, while planning runs. Decided on the survey's compact key set before
        any engine starts; when not wanted (a night, or a wave, with nothing new) an engine
        still starts lazily should a prompt arrive."""
        return not self.holds_answers or self.survey.prompts_wanted(wave)

    def stored(self, named: np.ndarray, wave: tuple[int, int] = routing.ONE_WAVE,
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

        if lookup is None and not self.holds_answers:
            return None
        survey, matched = lookup or (self.survey, self.matched)
        files = survey.files_for(named, wave)
        if not files:
            return None
        subset = matched.dataset(files)
        columns = [c for c in contract.stored_columns(self.job.stages)
                   if c in subset.schema.names]
        ds = ray.data.read_datasource(ParquetDatasource.from_pyarrow_dataset(
            subset, columns=columns, to_batch_kwargs={"filter": self.held}))
        context = self.job.context()
        for s in (s for s in self.job.stages if s.runs == STORED):
            ds = s.apply(ds, context)
        if wave[1] > 1:
            ds = ds.map_batches(routing.in_wave, batch_format="pyarrow", batch_size=None,
                                fn_args=wave)
        return routed(ds, named, shuffled=True)
