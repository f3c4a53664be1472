"""`emoray bench`: where the time of an annotation run goes, side by side on the same prompts.

Sides (each at two sizes; a rate is the slope between them, so the fixed start-up of Ray and the
engine is excluded: rate = (rows_large - rows_small) / (time_large - time_small)):

- bare: one `vllm.LLM.generate` call over prebuilt prompts with the engine's sampling params;
- engine: `emoray.engines.vllm_engine.VllmEngine.generate` (prompt building, constraint, scoring, results) in
  batches of `batch_size`;
- unconstrained: the same engine with `constrained=False` (the cost of the constraint);
- no_confidence: the same engine with `confidence=False` (the cost of confidences: for
  regression tasks, the leading digit's distribution);
- ray_data_llm (opt-in): the bare side's prompts and sampling params through a
  `ray.data.llm` vLLM processor (Ray's own batch-inference stages), as the issue's yardstick;
- pipeline: the whole Ray Data job, reading Parquet from S3 and committing the table;
- one_batch: the pipeline side with one batch in flight per engine actor
  (`batches_in_flight: 1`; the default holds two), to compare;
- streamed: the pipeline side with the streaming plan (`stream_plan: true`: rows that need no
  other row skip the hash shuffle), to compare the two plans;
- noop: the whole job with the engine stage answered by `NoopEngine` (`NOOP_ENGINE`: prompts
  built, no model): the per-row cost of everything around the model;
- transformers (opt-in): `emoray.engines.seq2seq.Seq2SeqEngine.generate` on each encoder-decoder
  checkpoint of `seq2seq_models` (default: a tiny T5 and a tiny BART), batched as the engine
  side, one side `transformers:<folder>` per checkpoint, each in its own Ray actor.

Each engine side runs once untimed on `WARM_UP` rows first, so both timed runs start warm. The
sides that start their own engine in every run, as a real run does (pipeline, noop,
ray_data_llm), share one untimed whole-job run before them that warms the driver (imports, Ray
Data, S3, deltalake): the no-op engine's, or the engine's when no engine actor ran first to warm
its caches.

bare, engine, unconstrained and no_confidence share one engine in one Ray actor; the pipeline sides start
their own, as a real run does. All run the same model, settings, prompts and constraints, one
after the other on the same machine.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pyarrow as pa

from emoray.lake import locations
from emoray.config import AnnotateConfig, EngineConfig, S3Config
from emoray.contract import Stage
from emoray.cost import device_of
from emoray.engines.pool import release
from emoray.engines.stage import ENGINE, engine_resources
from emoray.models import resolve_model
from emoray.pipeline import Annotator, build_annotator
from emoray.prompting import PromptFitter
from emoray.sample import sample_texts
from emoray.engines.scoring import Generation
from emoray.engines.seq2seq import Seq2SeqEngine
from emoray.tasks import Task, resolve
from emoray.engines.vllm_engine import VllmEngine

SIDES = ("bare", "engine", "unconstrained", "no_confidence", "ray_data_llm", "pipeline",
         "one_batch", "streamed", "noop", "transformers")
WARM_UP = 64
"""Rows of the untimed run before each side's timed ones (imports, worker start, grammars)."""


def bench_texts(n: int) -> list[str]:
    """n distinct texts cycled from the shipped AEB sample (distinct, so dedup saves nothing)."""
    base = [t for _, t in sample_texts()]
    return [f"{base[i % len(base)]} ({i // len(base)})" if i >= len(base) else base[i]
            for i in range(n)]


def _pairs(n: int, task_names: list[str]) -> list[tuple[Task, str, str | None]]:
    """(task, text, target) of n texts x requests, task-major as the pipeline sends them."""
    texts = bench_texts(n)
    return [(r.task, t, r.target) for r in resolve(task_names) for t in texts]


class NoopEngine:
    """An engine without a model: builds every prompt as the engines do (the checkpoint's
    tokenizer, `PromptFitter`) and answers each with a valid constant. Used by the benchmark
    only, through `NOOP_ENGINE`."""

    def __init__(self, config: EngineConfig):
        model = resolve_model(config.model)
        self.fitter = PromptFitter.for_model(config, model)

    def generate(self, tasks, texts, targets) -> list[Generation]:
        out = []
        for task, text, target in zip(tasks, texts, targets):
            _, cut = self.fitter.cut_to_fit(task, text, target)
            out.append(Generation(task.answer.example(), 1.0, cut, None, "stop", 0, 1))
        return out


NOOP_ENGINE = dataclasses.replace(ENGINE, name="Engine (no-op)",
                                  args={"engine_class": NoopEngine})
"""The engine stage's declared contract, answered by `NoopEngine`: the per-row cost of
everything around the model."""


class EngineSides:
    """Ray actor holding one engine; times the bare (vLLM only), engine, unconstrained and
    no_confidence sides."""

    def __init__(self, engine: EngineConfig, engine_class: type = VllmEngine):
        self.engine = engine_class(engine)

    def bare(self, n: int, task_names: list[str]) -> dict:
        pairs = _pairs(n, task_names)
        prompts = [self.engine.fitter.prompt(task, text, target) for task, text, target in pairs]
        params = [self.engine.sampling_params(task) for task, _, _ in pairs]
        t0 = time.perf_counter()
        outputs = self.engine.llm.generate(prompts, params, use_tqdm=False)
        elapsed = time.perf_counter() - t0
        return {"rows": len(prompts), "s": elapsed,
                "prompt_tokens": sum(len(o.prompt_token_ids) for o in outputs),
                "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs)}

    def generate(self, n: int, task_names: list[str], batch_size: int,
                 constrained: bool | None = None, confidence: bool | None = None) -> dict:
        """The engine side; `constrained` or `confidence` given overrides the engine's setting
        (the unconstrained and no_confidence sides)."""
        settings = {k: v for k, v in (("constrained", constrained), ("confidence", confidence))
                    if v is not None}
        engine = self.engine.variant(**settings) if settings else self.engine
        pairs = _pairs(n, task_names)
        t0 = time.perf_counter()
        results: list[Generation] = []
        for i in range(0, len(pairs), batch_size):
            results += engine.generate(*zip(*pairs[i:i + batch_size]))
        elapsed = time.perf_counter() - t0
        parsed = 0
        for (task, _, _), g in zip(pairs, results):
            try:
                task.answer.parse(g.raw_output or "")
                parsed += 1
            except ValueError:
                pass
        return {"rows": len(pairs), "s": elapsed, "parsed": parsed,
                "prompt_tokens": sum(g.prompt_tokens for g in results),
                "output_tokens": sum(g.output_tokens for g in results)}

    def request_params(self, task_names: list[str]) -> dict[str, dict]:
        """Per task, the bare side's sampling params as the plain dict `ray.data.llm` takes."""
        out = {}
        for r in resolve(task_names):
            p = self.engine.sampling_params(r.task)
            structured = p.structured_outputs
            out[r.task.name] = {
                "temperature": p.temperature, "max_tokens": p.max_tokens,
                **({"logprobs": p.logprobs} if p.logprobs is not None else {}),
                **({"logprob_token_ids": list(p.logprob_token_ids)}
                   if p.logprob_token_ids else {}),
                "detokenize": p.detokenize,  # every row: Arrow fills a missing key with None
                **({"structured_outputs": {k: v for k, v in dataclasses.asdict(structured).items()
                                           if v not in (None, False) and not k.startswith("_")}}
                   if structured else {})}
        return out


def _ray_data_llm(engine: EngineConfig, sizes: tuple[int, ...], tasks: list[str],
                  batch_size: int, params: dict[str, dict]) -> list[dict]:
    """The bare side's prompts and sampling params through a `ray.data.llm` vLLM processor
    (one engine replica, its chat-template, tokenize and detokenize stages off, one CPU bundle
    on a CPU engine; its own defaults otherwise), one processor run per size, each starting
    its engine as the pipeline side does (after the whole-job warm-up run)."""
    import ray.data
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    from emoray.engines.vllm_engine import llm_arguments

    model = resolve_model(engine.model)
    fitter = PromptFitter.for_model(engine, model)
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=model.source, batch_size=batch_size, concurrency=1,
            chat_template_stage=False, tokenize_stage=False, detokenize_stage=False,
            engine_kwargs=llm_arguments(engine),
            **({"placement_group_config": {"bundles": [{"CPU": 1}]}}
               if device_of(engine_resources(engine)) == "cpu" else {})),
        preprocess=lambda row: {"prompt": row["prompt"],
                                "sampling_params": params[row["task"]]},
        postprocess=lambda row: {"prompt_tokens": row["num_input_tokens"],
                                 "output_tokens": row["num_generated_tokens"]})
    runs = []
    for n in sizes:
        rows = [{"task": task.name, "prompt": fitter.prompt(task, text, target)}
                for task, text, target in _pairs(n, tasks)]
        t0 = time.perf_counter()
        out = processor(ray.data.from_items(rows)).to_pandas()
        runs.append({"rows": len(out), "s": time.perf_counter() - t0,
                     "prompt_tokens": int(out["prompt_tokens"].sum()),
                     "output_tokens": int(out["output_tokens"].sum())})
    return runs


def _slope(small: dict, large: dict, key: str = "rows") -> float | None:
    """Steady-state rate; None when the larger run was not slower (its per-row cost is below
    the noise of the fixed costs: use larger sizes)."""
    if large["s"] <= small["s"]:
        return None
    return round((large[key] - small[key]) / (large["s"] - small["s"]), 1)


def _pipeline(config: AnnotateConfig, n: int, engine: Stage) -> dict:
    locations.write_texts(config.input, config.s3, [str(i) for i in range(n)], bench_texts(n))
    t0 = time.perf_counter()
    summary = Annotator(config, engine=engine).run()
    return {"rows": summary.rows_out, "s": time.perf_counter() - t0,
            "parsed": summary.status_counts.get("ok", 0)
            + summary.status_counts.get("truncated", 0),
            "prompt_tokens": summary.prompt_tokens, "output_tokens": summary.output_tokens,
            "first_prompt_s": summary.first_prompt_s,
            "engine_idle_share": summary.engine_idle_share}


def _seq2seq_sides(engine: EngineConfig, sizes: tuple[int, int], tasks: list[str],
                   batch_size: int, models: list[str]) -> dict[str, list[dict]]:
    """The engine side on each encoder-decoder checkpoint (default: tiny T5 and BART built in
    a temporary folder), with the engine settings under test."""
    import tempfile

    import ray

    from emoray.tools.tiny_model import build_tiny_model

    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        models = models or [str(build_tiny_model(f"{folder}/tiny-{arch}", arch=arch))
                            for arch in ("t5", "bart")]
        for model in models:
            config = engine.model_copy(update={"model": model})
            actor = ray.remote(EngineSides).options(**engine_resources(config)).remote(
                config, Seq2SeqEngine)
            ray.get(actor.generate.remote(WARM_UP, tasks, batch_size))
            runs[f"transformers:{resolve_model(model).name}"] = [
                ray.get(actor.generate.remote(n, tasks, batch_size)) for n in sizes]
            ray.kill(actor)
    return runs


RATIOS = {"pipeline_over_bare": ("pipeline", "bare"), "engine_over_bare": ("engine", "bare"),
          "pipeline_over_engine": ("pipeline", "engine"),
          "streamed_over_pipeline": ("streamed", "pipeline"),
          "pipeline_over_one_batch": ("pipeline", "one_batch"),
          "pipeline_over_ray_data_llm": ("pipeline", "ray_data_llm"),
          "ray_data_llm_over_bare": ("ray_data_llm", "bare"),
          "constrained_over_unconstrained": ("engine", "unconstrained"),
          "confidence_on_over_off": ("engine", "no_confidence")}
"""The ratios the bench reports, each of two sides' rows/s, where both sides ran."""


def run_bench(engine: EngineConfig, sizes: tuple[int, int], tasks: list[str], root: str,
              batch_size: int = 1024, concurrency: int = 1,
              sides: tuple[str, ...] = SIDES, seq2seq_models: tuple[str, ...] = ()) -> dict:
    """Run the chosen sides at both sizes; `root` is where the pipeline sides read and write
    (s3://… on the local endpoint, or a folder)."""
    release()  # each side has the devices to itself: no engine kept warm by an earlier night
    runs, params = _engine_sides(engine, sizes, tasks, batch_size, sides)
    if "transformers" in sides:
        runs.update(_seq2seq_sides(engine, sizes, tasks, batch_size, seq2seq_models))

    def whole_job(side: str, n: int, stage: Stage) -> dict:
        release()  # each run starts its own engine, as a real run does (`keep_warm` or not)
        return _pipeline(AnnotateConfig(
            input=f"{root}/{side}-in-{n}", output=f"{root}/{side}-out-{n}", tasks=tasks,
            engine=engine, batch_size=batch_size, concurrency=concurrency,
            stream_plan=side == "streamed",
            **({"batches_in_flight": 1} if side == "one_batch" else {})), n, stage)

    whole = [(side, stage) for side, stage in (("pipeline", ENGINE), ("one_batch", ENGINE),
                                               ("streamed", ENGINE), ("noop", NOOP_ENGINE))
             if side in sides]
    if whole or "ray_data_llm" in sides:  # one untimed run warms the driver (imports, Ray
        # Data, S3, deltalake); with the no-op engine once the engine actor warmed the caches
        whole_job("warm-up", WARM_UP, NOOP_ENGINE if params is not None else whole[0][1])
    if "ray_data_llm" in sides:
        release()
        runs["ray_data_llm"] = _ray_data_llm(engine, sizes, tasks, batch_size, params)
    for side, stage in whole:
        runs[side] = [whole_job(side, n, stage) for n in sizes]
    return _figures(engine, sizes, tasks, runs, batch_size, concurrency)


def _engine_sides(engine: EngineConfig, sizes: tuple[int, int], tasks: list[str],
                  batch_size: int, sides: tuple[str, ...]) -> tuple[dict, dict | None]:
    """The sides one engine actor times (bare, engine, unconstrained, no_confidence), after an
    untimed warm-up, and the sampling params it gives ray_data_llm; (runs, params), params
    None when no side needed the actor."""
    import ray

    if not {"bare", "engine", "unconstrained", "no_confidence", "ray_data_llm"} & set(sides):
        return {}, None
    actor = ray.remote(EngineSides).options(**engine_resources(engine)).remote(engine)
    ray.get(actor.generate.remote(WARM_UP, tasks, batch_size))
    ray.get(actor.generate.remote(WARM_UP, tasks, batch_size, False))
    calls = {"bare": lambda n: actor.bare.remote(n, tasks),
             "engine": lambda n: actor.generate.remote(n, tasks, batch_size),
             "unconstrained": lambda n: actor.generate.remote(n, tasks, batch_size, False),
             "no_confidence": lambda n: actor.generate.remote(n, tasks, batch_size,
                                                              confidence=False)}
    runs = {side: [ray.get(calls[side](n)) for n in sizes] for side in calls if side in sides}
    params = ray.get(actor.request_params.remote(tasks))
    ray.kill(actor)
    return runs, params


def _figures(engine: EngineConfig, sizes: tuple[int, int], tasks: list[str],
             runs: dict[str, list[dict]], batch_size: int, concurrency: int) -> dict:
    """The bench's result: each side's runs, its steady-state rates (slope between the
    sizes), the ratios of `RATIOS` and of each Transformers side to the engine, the
    settings as the engines ran them, and the share of answers that parsed."""
    rates = {side: {"rows_per_s": _slope(*r),
                    "prompt_tokens_per_s": _slope(*r, key="prompt_tokens"),
                    "output_tokens_per_s": _slope(*r, key="output_tokens")}
             for side, r in runs.items()}
    pairs = {**{name: ab for name, ab in RATIOS.items() if ab[0] in rates and ab[1] in rates},
             **{f"{s.split(':', 1)[1]}_over_engine": (s, "engine") for s in rates
                if s.startswith("transformers:") and "engine" in rates}}
    ratios = {}
    for name, (a, b) in pairs.items():
        x, y = rates[a]["rows_per_s"], rates[b]["rows_per_s"]
        ratios[name] = round(x / y, 3) if x and y else None
    if "noop" in rates:
        rate = rates["noop"]["rows_per_s"]
        ratios["noop_us_per_row"] = round(1e6 / rate, 1) if rate else None
    checked = [r for side, rs in runs.items() if side != "unconstrained" for r in rs
               if "parsed" in r]
    decided = engine.on_device(device_of(engine_resources(engine)) == "cpu")
    return {
        "model": engine.model, "tasks": [r.key for r in resolve(tasks)], "sizes": list(sizes),
        "settings": {"constraint": engine.constraint, "constrained": engine.constrained,
                     "confidence": engine.confidence,
                     "enable_prefix_caching": engine.enable_prefix_caching,
                     "block_size": decided.block_size, "enforce_eager": decided.enforce_eager,
                     "in_process": decided.in_process,
                     "batch_size": batch_size, "concurrency": concurrency},
        "runs": runs, "rates": rates, "ratios": ratios,
        "parse_rate": round(sum(r["parsed"] for r in checked)
                            / sum(r["rows"] for r in checked), 4) if checked else None,
    }


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def render(result: dict) -> str:
    settings = ", ".join(f"{k} {v}" for k, v in result["settings"].items())
    lines = [f"model {result['model']}  tasks {','.join(result['tasks'])}", settings,
             f"{'side':24} {'rows':>8} {'seconds':>9} {'prompt tok':>11} {'gen tok':>8}"]
    for side, runs in result["runs"].items():
        for r in runs:
            lines.append(f"{side:24} {r['rows']:8d} {r['s']:9.2f} {r['prompt_tokens']:11d} "
                         f"{r['output_tokens']:8d}")
    small, large = result["sizes"]
    lines += [f"steady state (slope {small}->{large} input rows):",
              f"{'side':24} {'rows/s':>9} {'prompt tok/s':>13} {'gen tok/s':>10}"]
    for side, r in result["rates"].items():
        lines.append(f"{side:24} {_fmt(r['rows_per_s']):>9} {_fmt(r['prompt_tokens_per_s']):>13} "
                     f"{_fmt(r['output_tokens_per_s']):>10}")
    lines += [f"{name:32} {_fmt(value)}" for name, value in result["ratios"].items()]
    for side in ("pipeline", "one_batch", "streamed", "noop"):
        for r in result["runs"].get(side, []):
            share = r["engine_idle_share"]
            lines.append(f"{side} at {r['rows']} rows: first prompt {r['first_prompt_s']} s "
                         "after start, engine idle share "
                         + ("n/a" if share is None else f"{share:.1%}"))
    if any(r["rows_per_s"] is None for r in result["rates"].values()):
        lines.append("n/a: the larger run was not slower; per-row cost below the noise of fixed "
                     "costs at these sizes (try larger --rows)")
    rate = result["parse_rate"]
    lines.append(f"{'parse rate':32} " + ("n/a (no side parses its answers)" if rate is None
                                          else f"{rate * 100:.2f} %"))
    return "\n".join(lines)


def main_bench(scenario: str, engine: EngineConfig, sizes: tuple[int, int], tasks: list[str],
               batch_size: int, commit_rows: int, as_json: bool, concurrency: int = 1,
               sides: tuple[str, ...] = SIDES, seq2seq_models: tuple[str, ...] = ()) -> None:
    """Run a scenario against S3 on 127.0.0.1 and local Ray, and print its figures."""
    from emoray.runtime import start_ray
    from emoray.tools.local_s3 import local_s3

    if scenario == "enrich":
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            result = enrich_bench(sizes[-1], sizes[0], workdir)
        print(json.dumps(result, indent=None if as_json else 2))
        return
    with local_s3("emoray-bench"):
        start_ray()
        if scenario == "table":
            result = table_bench(engine, sizes[0], list(sizes[1:]), tasks, "s3://emoray-bench")
            print(json.dumps(result, indent=None if as_json else 2))
            return
        if scenario == "nightly":
            result = nightly_bench(engine, sizes[-1], tasks, "s3://emoray-bench", commit_rows)
            print(json.dumps(result, indent=None if as_json else 2))
            return
        result = run_bench(engine, sizes, tasks, "s3://emoray-bench", batch_size, concurrency,
                           sides, seq2seq_models)
    print(json.dumps(result) if as_json else render(result))


def nightly_bench(engine: EngineConfig, rows: int, tasks: list[str], root: str,
                  commit_rows: int) -> dict:
    """The nightly figures: a first run, an unchanged re-run (prompts must be 0; its wall time
    is the incremental check), and a crash after the second chunk's data file (before its
    Delta commit) followed by a re-run, counted for missing and duplicate rows."""
    import os
    import subprocess
    import sys

    from emoray.lake import table

    src = f"{root}/nightly-in"
    locations.write_texts(src, S3Config(), [str(i) for i in range(rows)], bench_texts(rows))

    def run(out: str):
        config = AnnotateConfig(input=src, output=out, tasks=tasks, engine=engine,
                                commit_rows=commit_rows)
        return build_annotator(config).run()

    first = run(f"{root}/nightly-out")
    again = run(f"{root}/nightly-out")
    crash_out = f"{root}/nightly-crash"
    command = [sys.executable, "-m", "emoray.tools.faults", "files-written@2", "annotate", "--input", src,
               "--output", crash_out, "--tasks", ",".join(tasks), "--model", engine.model,
               "--device", engine.device, "--max-model-len", str(engine.max_model_len),
               "--gpu-memory-utilization", str(engine.gpu_memory_utilization),
               "--commit-rows", str(commit_rows)]
    crashed = subprocess.run(command, env={**os.environ, "RAY_ADDRESS": "local"},
                             capture_output=True)
    crashed_table = table.AnnotationTable(crash_out)
    visible_after_crash = crashed_table.read(["doc_id"]).num_rows
    resumed = run(crash_out)
    expected = rows * len(resolve(tasks))
    final = table.pair_counts(crashed_table, expected, ["doc_id", "task", "target"])
    return {
        "rows_in": rows, "expected_rows": expected,
        "first_run": {"rows_out": first.rows_out, "prompts": first.prompts_sent,
                      "wall_s": round(first.wall_s, 2)},
        "rerun": {"rows_out": again.rows_out, "prompts": again.prompts_sent,
                  "wall_s": round(again.wall_s, 2),
                  "check_rows_per_s": round(expected / again.wall_s, 1)},
        "crash": {"exit_code": crashed.returncode, "visible_after_crash": visible_after_crash,
                  "resumed_rows_out": resumed.rows_out, "resumed_prompts": resumed.prompts_sent,
                  "final_rows": final["rows"], "missing": final["missing"],
                  "duplicates": final["duplicates"]},
    }


def stored_texts(n: int, seed: int) -> list[str]:
    """n distinct texts shaped like the AEB sample's (its texts with a suffix naming `seed` and
    the row), none of them in `bench_texts`."""
    base = [t for _, t in sample_texts()]
    return [f"{base[i % len(base)]} [{seed}-{i}]" for i in range(n)]


def _stored_rows(n: int, task: str, model: str, prompt_version: str, seed: int,
                 texts: list[str] | None = None) -> pa.Table:
    """n annotation rows as a run writes them, of `texts` (default n distinct `stored_texts`):
    each text hash is the real SHA-256 of its text, so the hashes spread over the whole hash
    space as a real table's do (no file's statistics can prune them)."""
    import hashlib
    from datetime import datetime, timezone

    import numpy as np

    from emoray.lake import table

    rng = np.random.default_rng(seed)
    texts = texts if texts is not None else stored_texts(n, seed)
    ids = pa.array(np.char.add(f"s{seed}-", np.arange(n).astype(str)))
    sha = pa.array([hashlib.sha256(t.encode()).hexdigest() for t in texts])
    cols = {f.name: pa.nulls(n, f.type) for f in table.SCHEMA}
    cols.update(doc_id=ids, text_sha256=sha, task=pa.array([task] * n),
                score=pa.array(rng.random(n)), raw_output=pa.array(["0.500"] * n),
                confidence=pa.array(rng.random(n)), status=pa.array(["ok"] * n),
                model=pa.array([model] * n), prompt_version=pa.array([prompt_version] * n),
                run_id=pa.array([f"stored-{seed}"] * n),
                annotated_at=pa.array([datetime.now(timezone.utc)] * n,
                                      pa.timestamp("us", tz="UTC")))
    return pa.table(cols, schema=table.SCHEMA)


def fill_table(annotations, rows: int, requests: list, model: str, prompt_versions: dict,
               file_rows: int = 500_000, texts: list[str] | None = None) -> float:
    """Commit `rows` stored annotations (`_stored_rows`: real SHA-256 hashes of distinct texts,
    or of `texts`) in files of `file_rows` rows, one commit each, the requests taking turns:
    the shape of a compacted table. Returns the seconds it took."""
    from emoray.lake import table

    t0 = time.perf_counter()
    writer = table.ChunkWriter(annotations, "stored", file_rows)
    for start in range(0, rows, file_rows):
        r = requests[(start // file_rows) % len(requests)]
        n = min(file_rows, rows - start)
        writer.commit_chunk(_stored_rows(
            n, r.task.name, model, prompt_versions[r.task.name], start,
            texts[start:start + n] if texts is not None else None), start // file_rows)
    return time.perf_counter() - t0


def table_bench(engine: EngineConfig, new_rows: int, stored_sizes: list[int],
                tasks: list[str], root: str, chunk_rows: int = 100_000,
                write_rows: int = 1_000_000, file_rows: int = 500_000) -> dict:
    """The Delta table's figures: a nightly run of `new_rows` new texts against stored tables
    of each size (`fill_table`: real hashes, files of `file_rows` rows), with the time to first
    prompt, the total and what the night read of the table (how the held check grows with
    the table); a night in waves (`wave_rows` a quarter of its input) whose input holds
    stored texts besides new ones, with its model loads; the driver's commit rate (one commit
    per `chunk_rows`) against Ray Data's `write_delta` (workers write the files, one commit)
    on `write_rows` rows; and the files of 30 small nights before and after optimize."""
    from emoray.lake import table

    requests = resolve(tasks)
    spec = resolve_model(engine.model)
    model = spec.identity
    versions = {r.task.name: engine.prompt_version(r.task, spec.prompt_format) for r in requests}
    src = f"{root}/table-in"
    locations.write_texts(src, S3Config(), [f"n{i}" for i in range(new_rows)],
                          bench_texts(new_rows))
    nights = []
    for stored in stored_sizes:
        annotations = table.AnnotationTable(f"{root}/table-{stored}")
        fill_s = fill_table(annotations, stored, requests, model, versions, file_rows)
        summary = build_annotator(AnnotateConfig(input=src, output=annotations.uri, tasks=tasks,
                                                 engine=engine)).run()
        nights.append({"stored_rows": stored, "fill_s": round(fill_s, 2),
                       "first_prompt_s": summary.first_prompt_s,
                       "total_s": round(summary.wall_s, 2), "prompts": summary.prompts_sent,
                       "rows_out": summary.rows_out, "read": summary.stored_read})
    writes = _write_paths(root, write_rows, chunk_rows, model)
    return {"new_rows": new_rows, "tasks": [r.key for r in requests], "nightly": nights,
            "waves": waves_bench(engine, new_rows, requests, versions, root),
            "write_1_chunk_per_commit": writes, "small_nights": _small_nights(root, model)}


def waves_bench(engine: EngineConfig, new_rows: int, requests: list, versions: dict,
                root: str) -> dict:
    """A night of 3 x `new_rows` texts the table answers plus `new_rows` new ones, in waves of
    a quarter of its input: rows reused and sent, waves, and model loads (engine starts)."""
    from emoray.lake import table

    model = resolve_model(engine.model).identity
    held, new = stored_texts(3 * new_rows, 7), bench_texts(new_rows)
    annotations = table.AnnotationTable(f"{root}/waves-out")
    fill_table(annotations, len(held), requests[:1], model, versions, texts=held)
    src = f"{root}/waves-in"
    locations.write_texts(src, S3Config(), [f"s7-{i}" for i in range(len(held))]
                          + [f"n{i}" for i in range(new_rows)], held + new)
    night = build_annotator(AnnotateConfig(input=src, output=annotations.uri,
                                           tasks=[requests[0].key], engine=engine,
                                           wave_rows=len(held + new) // 4))
    summary = night.run()
    report = next(r for r in table.run_reports(annotations) if r["run_id"] == summary.run_id)
    return {"input_rows": len(held + new), "waves": summary.waves,
            "model_loads": report["engine_starts"], "already_held": summary.already_held,
            "prompts": summary.prompts_sent, "rows_out": summary.rows_out,
            "total_s": round(summary.wall_s, 2)}


def _write_paths(root: str, rows: int, chunk_rows: int, model: str) -> dict:
    """rows/s of emoray's driver path (one commit per chunk) and of Ray Data's `write_delta`
    (workers write the files, the driver commits once) on the same rows."""
    import ray.data

    from emoray.lake import table

    data = pa.concat_tables([_stored_rows(min(chunk_rows, rows - s), "v_reg", model, "pv", s)
                             for s in range(0, rows, chunk_rows)])
    driver = table.AnnotationTable(f"{root}/write-driver")
    t0 = time.perf_counter()
    writer = table.ChunkWriter(driver, "w", chunk_rows)
    for batch in data.to_batches(max_chunksize=64_000):
        writer.write(pa.Table.from_batches([batch]))
    writer.flush()
    driver_s = time.perf_counter() - t0
    workers = table.AnnotationTable(f"{root}/write-workers")
    ds = ray.data.from_arrow(data).repartition(max(1, rows // chunk_rows)).materialize()
    t0 = time.perf_counter()
    ds.write_delta(workers.uri, mode="append", partition_by=table.PARTITION_BY,
                   storage_options=workers.options)
    workers_s = time.perf_counter() - t0
    return {"rows": rows, "driver_rows_per_s": round(rows / driver_s),
            "driver_commits": writer.chunks,
            "ray_write_delta_rows_per_s": round(rows / workers_s),
            "driver_over_ray": round(workers_s / driver_s, 3),
            "check": [driver.read(["doc_id"]).num_rows, workers.read(["doc_id"]).num_rows]}


def _small_nights(root: str, model: str, nights: int = 30, rows: int = 1000) -> dict:
    """Files after `nights` nights of `rows` texts x four requests (one chunk each, as the
    nightly job writes them), before and after optimize."""
    from emoray.lake import table

    annotations = table.AnnotationTable(f"{root}/small-nights")
    for night in range(nights):
        part = pa.concat_tables([_stored_rows(rows, task, model, "pv", night * 10 + i)
                                 for i, task in enumerate(["v_reg", "v_oc", "e_c", "ei_reg"])])
        table.ChunkWriter(annotations, f"night-{night}", 10**9).commit_chunk(part, 0)
    t0 = time.perf_counter()
    result = table.optimize(annotations)
    return {"nights": nights, "rows": annotations.read(["doc_id"]).num_rows,
            "files_before": result["files_before"], "files_after": result["files_after"],
            "optimize_s": round(time.perf_counter() - t0, 2)}


def _bench_annotations(docs, run: str) -> pa.Table:
    """Four labels (v_reg, v_oc, ei_reg:joy, e_c) for each doc id of `docs`, as run `run`."""
    from datetime import datetime, timezone

    import numpy as np

    from emoray.lake import table

    n, rng = len(docs), np.random.default_rng(len(docs))
    ids = pa.array(docs.astype(str))
    parts = []
    for task, target, score in [("v_reg", None, rng.random(n)), ("v_oc", None,
                                rng.integers(-3, 4, n).astype(float)),
                                ("ei_reg", "joy", rng.random(n)), ("e_c", None, None)]:
        cols = {f.name: pa.nulls(n, f.type) for f in table.SCHEMA}
        cols.update(doc_id=ids, task=pa.array([task] * n), target=pa.array([target] * n, pa.string()),
                    status=pa.array(["ok"] * n), model=pa.array(["bench"] * n),
                    prompt_version=pa.array(["v"] * n), run_id=pa.array([run] * n),
                    annotated_at=pa.array([datetime.now(timezone.utc)] * n,
                                          pa.timestamp("us", tz="UTC")))
        if score is not None:
            cols["score"] = pa.array(score)
        else:
            cols["labels"] = pa.array([["joy"] if i % 2 else ["anger", "fear"] for i in range(n)])
        parts.append(pa.table(cols, schema=table.SCHEMA))
    return pa.concat_tables(parts)


def enrich_bench(downstream_rows: int, annotated_docs: int, workdir: str, days: int = 30,
                 new_rows: int = 1000) -> dict:
    """The Spark join on local paths, one Spark session: `annotated_docs` docs with four labels
    each joined onto a Delta downstream of `downstream_rows` rows over `days` date partitions.
    Runs: the first version (whole, with the JVM's warm-up), a night with nothing new, a night
    after `new_rows` downstream rows and their labels arrived in one date (only that partition
    rewritten), and the same state enriched whole into a new table (what the night cost before
    it rewrote only what changed). Each run's wall time and commit time."""
    import numpy as np
    from deltalake import write_deltalake

    from emoray.lake import table
    from emoray.enrich.spark_join import EnrichConfig, enrich, spark_session

    def commit(docs: np.ndarray, run: str) -> None:
        writer = table.ChunkWriter(table.AnnotationTable(annotations), run, 10**9)
        writer.write(_bench_annotations(docs, run))
        writer.flush()

    def rows(ids: np.ndarray, day: np.ndarray) -> pa.Table:
        return pa.table({"id": ids, "day": pa.array(day.astype(str)),
                         "value": np.random.default_rng(len(ids)).random(len(ids))})

    annotations, down, m = f"{workdir}/annotations", f"{workdir}/downstream", downstream_rows
    commit(np.arange(annotated_docs), "bench")
    write_deltalake(down, rows(np.arange(m), np.arange(m) % days), partition_by=["day"])
    settings = {"annotations": annotations, "downstream": down, "partition_by": ["day"],
                "spark_conf": {"spark.ui.enabled": "false"}}
    spark = spark_session(EnrichConfig(output=f"{workdir}/out", **settings))
    runs = {}

    def run(name: str, output: str) -> None:
        t0 = time.perf_counter()
        summary = enrich(spark, EnrichConfig(output=output, **settings))
        runs[name] = {"wall_s": round(time.perf_counter() - t0, 2),
                      "commit_s": summary["commit_s"], "output_rows": summary["output_rows"],
                      "partitions_rewritten": summary["partitions_rewritten"]}

    run("first", f"{workdir}/out")
    run("nothing_new", f"{workdir}/out")
    new = np.arange(m, m + new_rows)
    write_deltalake(down, rows(new, np.zeros(new_rows, int)), mode="append", partition_by=["day"])
    commit(new, "bench-night")
    run("night", f"{workdir}/out")
    run("whole", f"{workdir}/out-whole")
    spark.stop()
    return {"downstream_rows": m, "annotated_docs": annotated_docs, "days": days,
            "new_rows": new_rows, "runs": runs,
            "night_over_whole": round(runs["night"]["wall_s"] / runs["whole"]["wall_s"], 3),
            "output_rows_match": runs["night"]["output_rows"] == runs["whole"]["output_rows"]
            == m + new_rows}