"""`emoray bench nightly-input`: what a night of a few new texts costs as its input grows.

For each input kind (a folder of Parquet files, a Delta table) and each size N of texts the
table already answers: the input holds the N texts (`bench.stored_texts`: real distinct texts,
real SHA-256 hashes), and the table and its run report are what completed nights over that
input leave (`bench.fill_table` writes the table's rows under the same doc ids, `_mark_read`
the report of a night that read the whole input, through the job's own input resolution); then
`new_rows` new texts arrive (one more file, or a Delta append) and the measured night reads only
them (`since_last`), twice over (`NIGHTS`). Every night runs on the warm engine of a warm-up
night, so no night pays the model load the others do not. A night that reads N old rows whole is
not run: at 5 M rows it takes longer than the bench can wait, and it is what `--full-input`
costs, not what a night costs.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa

from emoray.lake import locations, s3clients
from emoray.tools.bench import bench_texts, fill_table, stored_texts
from emoray.config import AnnotateConfig, EngineConfig, S3Config
from emoray.engines.pool import keep_warm
from emoray.models import resolve_model
from emoray.pipeline import build_annotator
from emoray.tasks import resolve

KINDS = ("parquet", "delta")
NIGHTS = 2
"""Measured nights per size, each adding `new_rows` other new texts: the faster one counts (the
machine is shared and noisy)."""


def _ids(rows: int, file_rows: int) -> list[list[str]]:
    """The doc ids of `fill_table`'s stored rows, file by file (`s<first row>-<i>`)."""
    return [[f"s{start}-{i}" for i in range(min(file_rows, rows - start))]
            for start in range(0, rows, file_rows)]


def _append(kind: str, src: str, ids: list[str], texts: list[str], name: str) -> None:
    """Add rows to the input: one more Parquet file, or one Delta append."""
    if kind == "parquet":
        locations.write_texts(src, S3Config(), ids, texts, name=f"{name}.parquet")
        return
    from deltalake import write_deltalake

    write_deltalake(src, pa.table({"id": ids, "text": texts}), mode="append",
                    storage_options=s3clients.delta_options(src, S3Config()))


def _night(engine: EngineConfig, src: str, out: str, tasks: list[str], **settings) -> dict:
    t0 = time.perf_counter()
    summary = build_annotator(AnnotateConfig(input=src, output=out, tasks=tasks, engine=engine,
                                             since_last=True, **settings)).run()
    return {"rows_in": summary.rows_in, "prompts": summary.prompts_sent,
            "rows_out": summary.rows_out, "first_prompt_s": summary.first_prompt_s,
            "total_s": round(time.perf_counter() - t0, 2)}


def _mark_read(engine: EngineConfig, src: str, out: str, tasks: list[str]) -> None:
    """The report a completed night over the whole of `src` leaves beside the table (what it
    read: `NightInput.read`), as `fill_table` wrote the table's rows (run id `stored`)."""
    from datetime import datetime, timezone

    from emoray.lake import table

    annotator = build_annotator(AnnotateConfig(input=src, output=out, tasks=tasks, engine=engine,
                                               since_last=True))
    table.write_report(annotator.table, {
        "run_id": "stored", "status": "ok", "input": src, "model": annotator.model.identity,
        "prompt_versions": annotator.versions, "input_read": annotator.night.read,
        "started_at": datetime.now(timezone.utc).isoformat()})


def input_bench(engine: EngineConfig, new_rows: int, old_sizes: list[int], tasks: list[str],
                root: str, file_rows: int = 500_000) -> dict:
    """The measured nights of each kind and size (see the module's docstring), and each size's
    faster night over that of the same kind with no old input (`over_empty`)."""
    from emoray.lake import table

    requests = resolve(tasks)[:1]
    spec = resolve_model(engine.model)
    versions = {r.task.name: engine.prompt_version(r.task, spec.prompt_format) for r in requests}
    tasks = [requests[0].key]
    new_texts = bench_texts(NIGHTS * new_rows)
    runs = []
    with keep_warm():
        warm = f"{root}/input-warm-up"
        locations.write_texts(warm, S3Config(), ["w0", "w1"], ["warm up one", "warm up two"])
        _night(engine, warm, f"{warm}-out", tasks)
        for kind in KINDS:
            for old in old_sizes:
                src, out = f"{root}/input-{kind}-{old}", f"{root}/input-{kind}-{old}-out"
                texts = stored_texts(old, 11)
                fill_table(table.AnnotationTable(out), old, requests, spec.identity, versions,
                           file_rows, texts=texts)
                run = {"kind": kind, "old_rows": old, "new_rows": new_rows}
                for k, ids in enumerate(_ids(old, file_rows)):
                    _append(kind, src, ids, texts[k * file_rows:k * file_rows + len(ids)],
                            f"old-{k}")
                if old:
                    _mark_read(engine, src, out, tasks)
                run["nights"] = []
                for k in range(NIGHTS):
                    _append(kind, src, [f"n{k}-{i}" for i in range(new_rows)],
                            new_texts[k * new_rows:(k + 1) * new_rows], f"new-{k}")
                    run["nights"].append(_night(engine, src, out, tasks))
                run["night_s"] = min(n["total_s"] for n in run["nights"])
                runs.append(run)
                for done in (src, out):  # the S3 endpoint holds everything in memory
                    fs, path = locations.filesystem_for(done, S3Config())
                    fs.delete_dir(path)
    for run in runs:
        empty = next((r for r in runs if r["kind"] == run["kind"] and r["old_rows"] == 0), None)
        if empty is not None:
            run["over_empty"] = round(run["night_s"] / empty["night_s"], 2)
    return {"tasks": tasks, "runs": runs}


def main_input(engine: EngineConfig, sizes: tuple[int, ...], tasks: list[str],
               as_json: bool) -> None:
    """`input_bench` against S3 on 127.0.0.1 and local Ray (`--rows NEW,OLD,OLD...`), printed."""
    from emoray.runtime import start_ray
    from emoray.tools.local_s3 import local_s3

    with local_s3("emoray-bench"):
        start_ray()
        result = input_bench(engine, sizes[0], list(sizes[1:]), tasks, "s3://emoray-bench")
    print(json.dumps(result, indent=None if as_json else 2))
