"""The night's engine actors: started once and shared by every wave of the night, and kept
warm for the next night in the same driver where the caller asks (`keep_warm`).

Ray Data ends an actor pool with the execution that made it, and a night in waves runs one
execution per wave, so an engine stage built as Ray Data's own actor pool loads the model once
per wave (on a GPU a 13B load is a minute or more). Here the engine actors live beside Ray Data,
as ray.data.llm's serving stage does: `EnginePool` starts `concurrency` actors of the engine
stage's class (`EngineStage`, or the bench's no-op engine) with the stage's Ray resources as
the night starts, and every wave's dataset hands its batches to them through `stage.call_engines`, a
Ray Data task stage that holds no resources of its own. An engine actor that dies is restarted by
Ray and the calls it held are retried (a batch is answered, never lost: the plan's rows are
committed only from the answers that come back).

A driver that runs several nights in a row (a gated night's canary, then the night; evaluate
over several architectures' tasks; the bench's sizes) opens `keep_warm()` around them: a night's
engines then outlive it, and the next night asking for the same engine (stage, settings, Ray
resources and count) binds them to itself (`EngineStage.begin_night`) instead of loading the
model again.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from emoray.contract import Stage

_kept: dict[str, EnginePool] | None = None
"""The warm engines of the open `keep_warm` block (at most one pool), or None outside one."""


class EnginePool:
    """`concurrency` actors of `stage`'s class, each taking `in_flight` calls at once."""

    def __init__(self, stage: Stage, kwargs: dict, resources: dict, concurrency: int,
                 in_flight: int):
        import ray

        actor = ray.remote(stage.fn).options(**resources, max_concurrency=in_flight,
                                             max_restarts=-1, max_task_retries=-1)
        self.actors = [actor.remote(**kwargs) for _ in range(concurrency)]

    def begin_night(self, stats, eager: bool) -> None:
        """Bind the (warm) actors to a new night: its `stats`, and its model load (`eager`)."""
        import ray

        ray.get([a.begin_night.remote(stats) for a in self.actors])
        if eager:
            for a in self.actors:
                a.load.remote()  # overlaps planning, as a new actor's eager load does

    def close(self) -> None:
        """End the actors (and free their devices); with Ray shut down they are gone already."""
        import ray

        if ray.is_initialized():
            for a in self.actors:
                ray.kill(a)
        self.actors = []


def _key(stage: Stage, kwargs: dict, resources: dict, concurrency: int, in_flight: int) -> str:
    """What makes two nights' engines the same: the stage's class, its settings (the engine
    configuration among them), its Ray resources and how many actors take how many calls."""
    settings = sorted((k, repr(v)) for k, v in kwargs.items())
    return repr((stage.fn.__module__, stage.fn.__qualname__, settings, sorted(resources.items()),
                 concurrency, in_flight))


@contextmanager
def keep_warm() -> Iterator[None]:
    """Keep each night's engine actors for the next night of this driver inside the block (one
    engine at a time: a night asking for another ends the kept one first, freeing its devices);
    the block's end ends them (`release` ends them sooner). Inside an open block, a nested one
    changes nothing."""
    global _kept
    if _kept is not None:
        yield
        return
    _kept = {}
    try:
        yield
    finally:
        release()
        _kept = None


def release() -> None:
    """End the engines kept warm now (`keep_warm`), freeing their devices; a block stays open
    and keeps the next night's."""
    for pool in (_kept or {}).values():
        pool.close()
    if _kept:
        _kept.clear()


@contextmanager
def night_engines(stage: Stage, kwargs: dict, resources: dict, concurrency: int, in_flight: int,
                  stats, eager: bool) -> Iterator[EnginePool]:
    """The night's engine pool: the kept one when it is the same engine (bound to this night),
    else a new one (`stats` and `eager` passed to each actor). Ended with the night, unless
    inside `keep_warm` and the night ended without an error."""
    import ray

    key = _key(stage, kwargs, resources, concurrency, in_flight)
    pool = _kept.pop(key, None) if _kept is not None else None
    release()  # another engine: ended before this one takes the devices
    if pool is not None:
        try:
            pool.begin_night(stats, eager)
        except ray.exceptions.RayError:  # its actors are gone (Ray restarted): start anew
            pool.close()
            pool = None
    if pool is None:
        pool = EnginePool(stage, {**kwargs, "stats": stats, "eager": eager}, resources,
                          concurrency, in_flight)
    try:
        yield pool
    except BaseException:
        pool.close()
        raise
    if _kept is not None:
        _kept[key] = pool
    else:
        pool.close()
