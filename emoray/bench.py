"""`emoray bench`: the full pipeline against bare `vllm.LLM.generate` on the same prompts.

Rates are steady-state slopes between two sizes, so the fixed start-up of Ray and the engine is
excluded: rate = (rows_large - rows_small) / (time_large - time_small). Both sides run the same
model, settings, prompts and answer constraints, one after the other on the same machine.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq

from emoray import io
from emoray.config import AnnotateConfig, EngineConfig, S3Config
from emoray.pipeline import build_annotator
from emoray.sample import sample_texts
from emoray.tasks import resolve


def bench_texts(n: int) -> list[str]:
    """n distinct texts cycled from the shipped AEB sample (distinct, so dedup saves nothing)."""
    base = [t for _, t in sample_texts()]
    return [f"{base[i % len(base)]} ({i // len(base)})" if i >= len(base) else base[i]
            for i in range(n)]


class BareGenerate:
    """Ray actor holding one engine; times `LLM.generate` alone on prebuilt prompts."""

    def __init__(self, engine: EngineConfig):
        from emoray.engine import Engine

        self.engine = Engine(engine)

    def run(self, n: int, task_names: list[str]) -> dict:
        requests = resolve(task_names)
        texts = bench_texts(n)
        prompts, params = [], []
        for r in requests:
            prompts += [self.engine.fit(r.task, t, r.target)[0] for t in texts]
            params += [self.engine.sampling_params(r.task)] * n
        t0 = time.perf_counter()
        outputs = self.engine.llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        parsed = 0
        for i, o in enumerate(outputs):
            try:
                requests[i // n].task.answer.parse(o.outputs[0].text)
                parsed += 1
            except ValueError:
                pass
        return {"rows": len(prompts), "s": elapsed, "parsed": parsed,
                "prompt_tokens": sum(len(o.prompt_token_ids) for o in outputs),
                "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs)}


def _slope(small: dict, large: dict) -> float:
    return (large["rows"] - small["rows"]) / max(large["s"] - small["s"], 1e-9)


def run_bench(engine: EngineConfig, sizes: tuple[int, int], tasks: list[str], root: str,
              batch_size: int = 256) -> dict:
    """Run both sides at both sizes; `root` is where the pipeline reads and writes
    (s3://… on the local endpoint, or a folder)."""
    import ray

    actor = ray.remote(BareGenerate).options(num_cpus=1).remote(engine)
    ray.get(actor.run.remote(64, tasks))  # warm-up: grammar compilation, caches
    bare = [ray.get(actor.run.remote(n, tasks)) for n in sizes]
    ray.kill(actor)

    pipeline = []
    for n in sizes:
        config = AnnotateConfig(input=f"{root}/input-{n}", output=f"{root}/out-{n}", tasks=tasks,
                                engine=engine, batch_size=batch_size)
        fs, path = io.filesystem_for(config.input, config.s3)
        fs.create_dir(path, recursive=True)
        with fs.open_output_stream(f"{path}/part-0.parquet") as out:
            pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": bench_texts(n)}),
                           out)
        t0 = time.perf_counter()
        summary = build_annotator(config).run()
        pipeline.append({"rows": summary.rows_out, "s": time.perf_counter() - t0,
                         "parsed": summary.status_counts.get("ok", 0)
                         + summary.status_counts.get("truncated", 0),
                         "prompt_tokens": summary.prompt_tokens,
                         "output_tokens": summary.output_tokens})
    bare_rate, pipe_rate = _slope(*bare), _slope(*pipeline)
    return {
        "model": engine.model, "tasks": [r.key for r in resolve(tasks)], "sizes": list(sizes),
        "bare": bare, "pipeline": pipeline,
        "bare_rows_per_s": round(bare_rate, 1), "pipeline_rows_per_s": round(pipe_rate, 1),
        "pipeline_over_bare": round(pipe_rate / bare_rate, 3),
        "parse_rate": round(sum(r["parsed"] for r in bare + pipeline)
                            / sum(r["rows"] for r in bare + pipeline), 4),
    }


def render(result: dict) -> str:
    lines = [f"model {result['model']}  tasks {','.join(result['tasks'])}",
             f"{'side':10} {'rows':>8} {'seconds':>9} {'prompt tok':>11} {'gen tok':>8}"]
    for side in ("bare", "pipeline"):
        for r in result[side]:
            lines.append(f"{side:10} {r['rows']:8d} {r['s']:9.2f} {r['prompt_tokens']:11d} "
                         f"{r['output_tokens']:8d}")
    lines += [
        f"steady state (slope {result['sizes'][0]}→{result['sizes'][1]} rows):",
        f"  bare LLM.generate  {result['bare_rows_per_s']:9.1f} rows/s",
        f"  full pipeline      {result['pipeline_rows_per_s']:9.1f} rows/s",
        f"  pipeline / bare    {result['pipeline_over_bare']:9.3f}",
        f"  parse rate         {result['parse_rate'] * 100:9.2f} %",
    ]
    return "\n".join(lines)


def main_bench(scenario: str, engine: EngineConfig, sizes: tuple[int, int], tasks: list[str],
               batch_size: int, commit_rows: int, as_json: bool) -> None:
    """Run a scenario against S3 on 127.0.0.1 and local Ray, and print its figures."""
    import ray

    from emoray.s3local import local_s3

    if scenario == "enrich":
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            result = enrich_bench(sizes[-1], sizes[0], workdir)
        print(json.dumps(result, indent=None if as_json else 2))
        return
    with local_s3("emoray-bench"):
        ray.init(ignore_reinit_error=True, include_dashboard=False,
                 runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING"}})
        if scenario == "nightly":
            result = nightly_bench(engine, sizes[-1], tasks, "s3://emoray-bench", commit_rows)
            print(json.dumps(result, indent=None if as_json else 2))
            return
        result = run_bench(engine, sizes, tasks, "s3://emoray-bench", batch_size)
    print(json.dumps(result) if as_json else render(result))


def nightly_bench(engine: EngineConfig, rows: int, tasks: list[str], root: str,
                  commit_rows: int) -> dict:
    """The nightly figures: a first run, an unchanged re-run (prompts must be 0; its wall time
    is the incremental check), and a crash after the second chunk's data file (before its
    marker) followed by a re-run, counted for missing and duplicate rows."""
    import os
    import subprocess
    import sys

    from emoray import table

    src = f"{root}/nightly-in"
    fs, path = io.filesystem_for(src, S3Config())
    fs.create_dir(path, recursive=True)
    with fs.open_output_stream(f"{path}/part-0.parquet") as out:
        pq.write_table(pa.table({"id": [str(i) for i in range(rows)],
                                 "text": bench_texts(rows)}), out)

    def run(out: str):
        config = AnnotateConfig(input=src, output=out, tasks=tasks, engine=engine,
                                commit_rows=commit_rows)
        return build_annotator(config).run()

    first = run(f"{root}/nightly-out")
    again = run(f"{root}/nightly-out")
    crash_out = f"{root}/nightly-crash"
    command = [sys.executable, "-m", "emoray.cli", "annotate", "--input", src,
               "--output", crash_out, "--tasks", ",".join(tasks), "--model", engine.model,
               "--device", engine.device, "--max-model-len", str(engine.max_model_len),
               "--gpu-memory-utilization", str(engine.gpu_memory_utilization),
               "--commit-rows", str(commit_rows)]
    crashed = subprocess.run(command, env={**os.environ, "EMORAY_FAULT": "chunk-file-written@2",
                                           "RAY_ADDRESS": ""}, capture_output=True)
    out_fs, out_root = io.filesystem_for(crash_out, S3Config())
    visible_after_crash = table.read_committed(out_fs, out_root, ["doc_id"]).num_rows
    resumed = run(crash_out)
    final = table.read_committed(out_fs, out_root, ["doc_id", "task", "target"])
    keys = final.group_by(["doc_id", "task", "target"]).aggregate([("doc_id", "count")])
    expected = rows * len(resolve(tasks))
    return {
        "rows_in": rows, "expected_rows": expected,
        "first_run": {"rows_out": first.rows_out, "prompts": first.prompts_sent,
                      "wall_s": round(first.wall_s, 2)},
        "rerun": {"rows_out": again.rows_out, "prompts": again.prompts_sent,
                  "wall_s": round(again.wall_s, 2),
                  "check_rows_per_s": round(expected / again.wall_s, 1)},
        "crash": {"exit_code": crashed.returncode, "visible_after_crash": visible_after_crash,
                  "resumed_rows_out": resumed.rows_out, "resumed_prompts": resumed.prompts_sent,
                  "final_rows": final.num_rows,
                  "missing": expected - keys.num_rows,
                  "duplicates": final.num_rows - keys.num_rows},
    }


def enrich_bench(downstream_rows: int, annotated_docs: int, workdir: str) -> dict:
    """The Spark join on local paths: `annotated_docs` docs with four labels each (committed as
    one run) joined onto `downstream_rows` rows; timed twice in one Spark session (the first run
    includes JVM warm-up)."""
    from datetime import datetime, timezone

    import numpy as np
    import pyarrow.fs as pafs

    from emoray import table
    from emoray.enrich import EnrichConfig, enrich, spark_session

    n = annotated_docs
    ids = pa.array(np.arange(n).astype(str))
    rng = np.random.default_rng(0)
    parts = []
    for task, target, score in [("v_reg", None, rng.random(n)), ("v_oc", None,
                                rng.integers(-3, 4, n).astype(float)),
                                ("ei_reg", "joy", rng.random(n)), ("e_c", None, None)]:
        cols = {f.name: pa.nulls(n, f.type) for f in table.SCHEMA}
        cols.update(doc_id=ids, task=pa.array([task] * n), target=pa.array([target] * n, pa.string()),
                    status=pa.array(["ok"] * n), model=pa.array(["bench"] * n),
                    prompt_version=pa.array(["v"] * n), run_id=pa.array(["bench"] * n),
                    annotated_at=pa.array([datetime.now(timezone.utc)] * n,
                                          pa.timestamp("us", tz="UTC")))
        if score is not None:
            cols["score"] = pa.array(score)
        else:
            cols["labels"] = pa.array([["joy"] if i % 2 else ["anger", "fear"] for i in range(n)])
        parts.append(pa.table(cols, schema=table.SCHEMA))
    annotations = f"{workdir}/annotations"
    writer = table.RunWriter(pafs.LocalFileSystem(), annotations, "bench", "2026-01-01", 10**9)
    writer.write(pa.concat_tables(parts))
    writer.flush()
    down = f"{workdir}/downstream"
    pafs.LocalFileSystem().create_dir(down)
    m = downstream_rows
    pq.write_table(pa.table({"id": np.arange(m), "day": pa.array(
        (np.arange(m) % 7).astype(str)), "value": rng.random(m)}), f"{down}/part-0.parquet")
    config = EnrichConfig(annotations=annotations, downstream=down, output=f"{workdir}/out",
                          partition_by=["day"], spark_conf={"spark.ui.enabled": "false"})
    spark = spark_session(config)
    runs = []
    for _ in range(2):
        t0 = time.perf_counter()
        summary = enrich(spark, config)
        wall = time.perf_counter() - t0
        runs.append({"wall_s": round(wall, 2), "output_rows": summary["output_rows"],
                     "rows_per_s": round(m / wall, 1)})
    spark.stop()
    return {"downstream_rows": m, "annotated_docs": n, "annotation_rows": 4 * n,
            "filled_valence": summary["filled"].get("affect_valence"),
            "first_run": runs[0], "second_run": runs[1],
            "output_rows_match": all(r["output_rows"] == m for r in runs)}
