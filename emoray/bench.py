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
from emoray.config import AnnotateConfig, EngineConfig
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


def main_bench(engine: EngineConfig, sizes: tuple[int, int], tasks: list[str],
               batch_size: int, as_json: bool) -> None:
    import ray

    from emoray.s3local import local_s3

    with local_s3("emoray-bench"):
        ray.init(ignore_reinit_error=True, include_dashboard=False,
                 runtime_env={"env_vars": {"VLLM_LOGGING_LEVEL": "WARNING"}})
        result = run_bench(engine, sizes, tasks, "s3://emoray-bench", batch_size)
    print(json.dumps(result) if as_json else render(result))

