"""`emoray bench memory`: whether a run's memory grows with its input.

Runs the whole job with the no-op engine (`bench.NOOP_ENGINE`: the model's speed is not the
point) on each input size, in local Ray, into a fresh table per size, sampling every
`every_s` the driver's resident memory (psutil; and its private part, Linux `RssAnon`) and
the bytes in use in Ray's object store
(what `ray memory --stats-only` prints, from Ray's internal API), and reports each run's peaks.
The input is Parquet files of `file_rows` rows (row groups of 50 000), written a row group at a
time; its first text is 67 kB long (a pasted document).
"""

from __future__ import annotations

import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq

from emoray.lake import locations
from emoray.config import AnnotateConfig, EngineConfig, S3Config

LONG_TEXT = 67_000
"""Characters of the input's one long text."""


def _anon_rss() -> int:
    """This process's private anonymous resident bytes (Linux `RssAnon`): its own heap, without
    the object store's shared pages it has mapped, which RSS also counts; 0 elsewhere."""
    try:
        with open("/proc/self/status") as status:
            line = next(x for x in status if x.startswith("RssAnon:"))
    except (OSError, StopIteration):
        return 0
    return int(line.split()[1]) << 10


class PeakSampler(threading.Thread):
    """Samples this process's RSS (all, and private), and the object store's bytes in use,
    until stopped."""

    def __init__(self, every_s: float = 0.5):
        super().__init__(daemon=True, name="emoray-footprint")
        self.every_s, self.stop = every_s, threading.Event()
        self.rss = self.anon = self.store = 0
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self._sample()
        except Exception as e:  # raised by the bench after the run, not a silent 0
            self.error = e

    def _sample(self) -> None:
        import psutil
        import ray
        from ray._private.internal_api import (
            get_memory_info_reply,
            get_state_from_address,
        )

        me, state = psutil.Process(), get_state_from_address(
            ray.get_runtime_context().gcs_address)
        while not self.stop.is_set():
            self.rss = max(self.rss, me.memory_info().rss)
            self.anon = max(self.anon, _anon_rss())
            try:
                used = get_memory_info_reply(state).store_stats.object_store_bytes_used
                self.store = max(self.store, used)
            except Exception:  # a slow reply: the next sample
                pass
            self.stop.wait(self.every_s)


def write_input(uri: str, rows: int, file_rows: int, group_rows: int = 50_000) -> int:
    """`rows` distinct texts as Parquet files of `file_rows` rows under `uri`, written a row
    group at a time (so the driver never holds the whole input); one text is 67 kB long."""
    from emoray.tools.bench import bench_texts

    fs, path = locations.filesystem_for(uri, S3Config())
    base = bench_texts(group_rows)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    for first in range(0, rows, file_rows):
        last = min(first + file_rows, rows)
        name = f"{path}/part-{first // file_rows:05d}.parquet"
        with fs.open_output_stream(name) as out, pq.ParquetWriter(out, schema) as writer:
            for start in range(first, last, group_rows):
                n = min(group_rows, last - start)
                texts = [f"{t} [{start}]" for t in base[:n]]
                if start == 0:
                    texts[0] = ("very long text " * (LONG_TEXT // 15 + 1))[:LONG_TEXT]
                writer.write_table(pa.table({"id": [f"m{start + i}" for i in range(n)],
                                             "text": texts}, schema=schema))
    return rows


PLANS = ("stream", "shuffle")
"""The plan of a run: stream the rows that need no other row (`stream_plan`), or shuffle all."""


def memory_bench(engine: EngineConfig, sizes: tuple[int, ...], tasks: list[str], root: str,
                 batch_size: int, commit_rows: int, file_rows: int = 250_000,
                 plans: tuple[str, ...] = ("shuffle",),
                 wave_rows: tuple[int | None, ...] = (None,)) -> dict:
    """Each size's run under each plan (`PLANS`) and each `wave_rows` (None: one wave): rows
    committed, waves, wall time, first prompt (when the no-op engine got its first batch),
    peak driver RSS and object store bytes."""
    import psutil

    from emoray.tools.bench import NOOP_ENGINE
    from emoray.pipeline import Annotator

    runs = []
    for rows, plan, wave in ((r, p, w) for r in sizes for p in plans for w in wave_rows):
        src, out = f"{root}/memory-in-{rows}", f"{root}/memory-out-{rows}-{plan}-{wave}"
        if plan == plans[0] and wave == wave_rows[0]:
            write_input(src, rows, file_rows)
        config = AnnotateConfig(input=src, output=out, tasks=tasks, engine=engine,
                                batch_size=batch_size, commit_rows=commit_rows,
                                stream_plan=plan == "stream", wave_rows=wave)
        sampler = PeakSampler()
        before, before_anon = psutil.Process().memory_info().rss, _anon_rss()
        sampler.start()
        t0 = time.perf_counter()
        annotator = Annotator(config, engine=NOOP_ENGINE)
        summary = annotator.run()
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        if sampler.error is not None:
            raise RuntimeError(f"memory sampling failed: {sampler.error}")
        runs.append({"rows": rows, "plan": plan, "wave_rows": wave, "waves": annotator.waves,
                     "rows_out": summary.rows_out,
                     "statuses": summary.status_counts, "wall_s": round(wall, 1),
                     "first_prompt_s": summary.first_prompt_s,
                     "driver_rss_before_mib": before >> 20,
                     "peak_driver_rss_mib": sampler.rss >> 20,
                     "driver_private_before_mib": before_anon >> 20,
                     "peak_driver_private_mib": sampler.anon >> 20,
                     "peak_object_store_mib": sampler.store >> 20})
    return {"tasks": tasks, "batch_size": batch_size, "commit_rows": commit_rows,
            "file_rows": file_rows, "runs": runs}


def render(result: dict) -> str:
    lines = [f"no-op engine, tasks {','.join(result['tasks'])}, batch {result['batch_size']}, "
             f"commit {result['commit_rows']} rows, input files of {result['file_rows']} rows",
             f"{'input rows':>11} {'plan':>8} {'waves':>6} {'committed':>10} {'wall s':>7} "
             f"{'1st prompt s':>13} "
             f"{'driver RSS MiB':>15} {'(before)':>9} {'private MiB':>12} {'(before)':>9} "
             f"{'object store MiB':>17}"]
    for r in result["runs"]:
        lines.append(f"{r['rows']:>11} {r['plan']:>8} {r['waves']:>6} {r['rows_out']:>10} "
                     f"{r['wall_s']:>7} "
                     f"{'n/a' if r['first_prompt_s'] is None else r['first_prompt_s']:>13} "
                     f"{r['peak_driver_rss_mib']:>15} {r['driver_rss_before_mib']:>9} "
                     f"{r['peak_driver_private_mib']:>12} {r['driver_private_before_mib']:>9} "
                     f"{r['peak_object_store_mib']:>17}")
    return "\n".join(lines)


def main_memory(engine: EngineConfig, sizes: tuple[int, ...], tasks: list[str],
                batch_size: int, commit_rows: int, as_json: bool,
                file_rows: int = 250_000, plans: tuple[str, ...] = ("shuffle",),
                wave_rows: tuple[int | None, ...] = (None,)) -> None:
    """`emoray bench memory` against S3 on 127.0.0.1 and local Ray, printed."""
    import json

    from emoray.runtime import start_ray
    from emoray.tools.local_s3 import local_s3

    with local_s3("emoray-bench"):
        start_ray()
        result = memory_bench(engine, sizes, tasks, "s3://emoray-bench", batch_size,
                              commit_rows, file_rows, plans, wave_rows)
    print(json.dumps(result) if as_json else render(result))
