"""The night's engine actors: started once and shared by every wave of the night.

Ray Data ends an actor pool with the execution that made it, and a night in waves runs one
execution per wave, so an engine stage built as Ray Data's own actor pool loads the model once
per wave (on a GPU a 13B load is a minute or more). Here the engine actors live beside Ray Data,
as ray.data.llm's serving stage does: `EnginePool` starts `concurrency` actors of the engine
stage's class (`EngineStage`, or the bench's no-op engine) with the stage's Ray resources as
the night starts, and every wave's dataset hands its batches to them through `EngineCall`, a Ray
Data actor stage that holds no resources of its own. An engine actor that dies is restarted by
Ray and the calls it held are retried (a batch is answered, never lost: the plan's rows are
committed only from the answers that come back).
"""

from __future__ import annotations

import itertools
import random

import pyarrow as pa

from emoray.contract import Stage


class EnginePool:
    """`concurrency` actors of `stage`'s class, each taking `in_flight` calls at once."""

    def __init__(self, stage: Stage, kwargs: dict, resources: dict, concurrency: int,
                 in_flight: int):
        import ray

        actor = ray.remote(stage.fn).options(**resources, max_concurrency=in_flight,
                                             max_restarts=-1, max_task_retries=-1)
        self.actors = [actor.remote(**kwargs) for _ in range(concurrency)]

    def close(self) -> None:
        """End the actors (and free their devices)."""
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def __enter__(self) -> EnginePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EngineCall:
    """Ray Data actor stage handing each batch to the night's engine actors in turn (each
    instance starts at a random one, so `concurrency` of them spread over the pool)."""

    def __init__(self, actors: list):
        self.actors = actors
        self.turn = itertools.count(random.randrange(len(actors)))

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        return ray.get(self.actors[next(self.turn) % len(self.actors)].__call__.remote(batch))
