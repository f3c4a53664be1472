"""The lost-node watchdog: the driver reads the run's batches through a thread so it can see
when no alive node could host an engine actor for `engine_wait_s`, and fail the run then; Ray
itself waits for such a node forever."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import pyarrow as pa

from emoray.engines.stage import can_host


class NoEngineNodeError(RuntimeError):
    """No alive node could host an engine actor for `engine_wait_s`."""


def hostable(resources: dict) -> bool:
    """`can_host`, taking a failed look at the cluster (a busy GCS) as a node found."""
    try:
        return can_host(resources)
    except Exception:
        return True


def _pulled(batches: Iterator[pa.Table], name: str) -> tuple[queue.Queue, threading.Event, object]:
    """A thread that pulls `batches` into a small queue until stopped, then closes `batches`
    (which ends Ray Data's execution and frees its actors); returns the queue, the stop event
    and the end marker it puts last. An error while pulling is put in the queue too."""
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

    threading.Thread(target=pull, daemon=True, name=name).start()
    return handoff, stop, end


def watched(batches: Iterator[pa.Table], resources: dict, wait: float,
            name: str) -> Iterator[pa.Table]:
    """`batches`, failing with `NoEngineNodeError` once no alive node offers `resources` for
    `wait` seconds while no batch arrives. However the driver stops reading, the pulling thread
    (named `name`) then stops and closes `batches`."""
    handoff, stop, end = _pulled(batches, name)
    lost_since = None
    try:
        while True:
            try:
                item = handoff.get(timeout=min(5.0, wait))
            except queue.Empty:
                if hostable(resources):
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
