"""The row contract between the pipeline's stages: each stage declares what it runs on, the
columns it needs, adds and drops, the stored-table columns it reads, its Ray resources and its
table-in/table-out function (`Stage`); `check` proves, before Ray starts, that every stage's
needs are met by the stages before it, `check_bindings` that every argument a stage's function
takes is one the run provides, and `render` prints the list for docs/annotate.md. Every column
a stage names is registered, with its type and meaning, in `emoray.columns`.

Following Ray's `ray.data.llm` (stages return the input keys they need) and NeMo Curator
(stages declare inputs, outputs and resources), so a new stage is one declaration plus its
place in the pipeline's list (`emoray.pipeline.STAGES`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa

from emoray import columns
from emoray.columns import COLUMNS
from emoray.config import ConfigError

INPUT = "input files"
"""Runs on each input dataset as read, before it meets the stored rows."""
STORED = "stored table"
"""Reads the table's stored rows (its `stored` columns) to join with tonight's input."""
PARTITION = "text partition"
"""Runs on one hash partition of the text hash after the shuffle: every input and stored row
of a text meet in one table."""
ACTORS = "engine actors"
"""A pool of Ray actors, each holding a model; rows arrive in `batch_size` batches."""
BATCHES = "row batches"
"""Runs on any batch of rows, fused by Ray Data with its neighbours."""

FLOW = {INPUT: 0, STORED: 1, PARTITION: 2, ACTORS: 3, BATCHES: 3}
"""Where each kind of stage can sit: input stages first, then the stored read, then the text
partition's stages, then engine actors and row-batch stages in any order."""

CPU_TASK = {"num_cpus": 1}
"""Ray resources of a CPU stage's task (Ray Data's default for a task)."""

ALL = ("*",)
"""`drops=ALL`: the stage's output holds its `adds` only."""


class ContractError(ConfigError):
    """A stage needs a column no stage before it gives (or its function broke its promise)."""


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline and its declared row contract.

    `fn` is a function `(batch, **kwargs) -> batch` or, for `ACTORS`, a callable class whose
    constructor loads what the stage holds; `args` are constructor arguments fixed by the
    declaration (e.g. the engine class of a variant); `resources` a Ray resources dict or a
    function of the engine config that returns one."""

    name: str
    runs: str
    fn: Callable
    needs: tuple[str, ...] = ()
    adds: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    stored: tuple[str, ...] = ()
    """Columns of the stored table this stage reads from the stored rows of its partition."""
    resources: dict | Callable = field(default_factory=lambda: dict(CPU_TASK))
    args: dict = field(default_factory=dict)
    options: tuple[str, ...] = ()
    """Parameters of `fn` not taken from the run's context: left at their defaults, or bound
    by a caller that plans otherwise (`check_bindings` allows exactly these)."""
    mapper: Callable | None = None
    """How the pipeline puts this stage over a Ray dataset, `(ds, stage, context) -> ds`;
    None: `map_task`. The engine stage hands batches to the night's actors instead."""

    def __call__(self, batch: pa.Table, *args, **kwargs) -> pa.Table:
        """Run a function stage on `batch`, checking its needs on entry and its adds on exit."""
        require(batch, self)
        out = self.fn(batch, *args, **kwargs)
        missing = [c for c in self.adds if c not in out.column_names]
        if missing:
            raise ContractError(f"stage {self.name} promised columns {missing}; its output has "
                                f"{out.column_names}")
        return out

    def task(self) -> Callable:
        """This stage as a plain function named after it, for Ray Data's `map_batches` (whose
        operators, in logs and the dashboard, then read `MapBatches(Normalize)`)."""
        def run(batch: pa.Table, **kwargs) -> pa.Table:
            return self(batch, **kwargs)

        run.__name__ = run.__qualname__ = self.name
        return run

    def bound(self, context: dict) -> dict:
        """The `context` fields this stage's function takes (a stage declares its inputs by
        its parameters' names; `check_bindings` proves each is there)."""
        params = inspect.signature(self.fn).parameters
        return {k: v for k, v in context.items() if k in params}

    def apply(self, ds, context: dict):
        """This stage over the lazy Ray dataset `ds`, bound to the run's `context`."""
        return (self.mapper or map_task)(ds, self, context)

    def after(self, columns: set[str]) -> set[str]:
        """The columns a batch holds after this stage, given those it held before."""
        kept = set() if self.drops == ALL else columns - set(self.drops)
        return kept | set(self.adds)


def map_task(ds, stage: Stage, context: dict):
    """A function stage over a Ray dataset: one Ray Data task per block, with the context
    fields its function takes and its declared Ray resources."""
    return ds.map_batches(stage.task(), batch_format="pyarrow", batch_size=None,
                          fn_kwargs=stage.bound(context), **stage.resources)


def require(batch: pa.Table, stage: Stage) -> None:
    """Fail with the stage's name and the missing columns when a batch lacks what it needs."""
    missing = [c for c in stage.needs if c not in batch.column_names]
    if missing:
        raise ContractError(f"stage {stage.name} needs columns {missing}; got "
                            f"{batch.column_names}")


def stored_columns(stages: tuple[Stage, ...]) -> list[str]:
    """The stored-table columns the stages read, in first-declared order (the stored read
    takes exactly these)."""
    return list(dict.fromkeys(c for s in stages for c in s.stored))


def check(stages: tuple[Stage, ...], table_columns: list[str]) -> None:
    """Before Ray starts: the stages sit in an order the pipeline can run (`FLOW`), each
    stage's needs are given by a stage before it, and each stored column it reads is a column
    of the table (`table_columns`). Raises ContractError naming the stage, the missing columns
    and what the stages before it give."""
    have: set[str] = set()
    for before, s in zip(stages, stages[1:]):
        if FLOW[s.runs] < FLOW[before.runs]:
            raise ContractError(f"stage {s.name} runs on {s.runs} and cannot come after stage "
                                f"{before.name}, which runs on {before.runs}")
    for s in stages:
        unregistered = [c for c in (*s.needs, *s.adds) if c not in COLUMNS]
        if unregistered:
            raise ContractError(f"stage {s.name} names columns {unregistered} that "
                                "emoray.columns does not register: add each with its type and "
                                "what it means, or use a registered name")
        missing = [c for c in s.needs if c not in have]
        if missing:
            given = ", ".join(sorted(have)) or "nothing"
            raise ContractError(f"stage {s.name} needs columns {missing} that no stage before it "
                                f"gives (they give: {given})")
        unknown = [c for c in s.stored if c not in table_columns]
        if unknown:
            raise ContractError(f"stage {s.name} reads stored columns {unknown} that the "
                                "annotation table does not have")
        have = s.after(have)


def check_bindings(stages: tuple[Stage, ...], context: Iterable[str]) -> None:
    """Before Ray starts: every parameter of a function stage after its batch names a field of
    the run's context (`context`, what `pipeline.Annotator` passes by name) or one of the
    stage's declared `options`, so a renamed parameter is an error here rather than a stage
    silently running on its default."""
    given = set(context)
    for s in (s for s in stages if s.runs != ACTORS):
        wanted = list(inspect.signature(s.fn).parameters)[1:]
        unknown = [p for p in wanted if p not in given and p not in s.options]
        if unknown:
            raise ContractError(
                f"stage {s.name}'s function {s.fn.__name__} takes {unknown}, which the run "
                f"context does not provide (it provides: {', '.join(sorted(given))}): rename "
                "the parameter to one of those, or add the field to the run context")


def _resources(r: dict | Callable) -> str:
    if callable(r):  # its docstring's first sentence, whole
        return " ".join((r.__doc__ or r.__name__).split()).split(". ")[0].rstrip(".")
    return ", ".join(f"{k} {v}" for k, v in r.items())


def render(stages: tuple[Stage, ...]) -> str:
    """The stage list as a Markdown table, then the columns the stages name (docs/annotate.md
    holds both; `emoray stages` prints them)."""
    lines = ["| # | stage | runs on | needs | adds | drops | resources |",
             "|---|---|---|---|---|---|---|"]
    for i, s in enumerate(stages, 1):
        needs = ", ".join(s.needs) or "-"
        if s.stored:
            needs += "; stored: " + ", ".join(s.stored)
        drops = "all but its adds" if s.drops == ALL else ", ".join(s.drops) or "-"
        lines.append(f"| {i} | {s.name} | {s.runs} | {needs} | {', '.join(s.adds) or '-'} | "
                     f"{drops} | {_resources(s.resources)} |")
    return "\n".join(lines) + "\n\nThe columns (`emoray.columns`):\n\n" + columns.render()
