"""`emoray bench cascade`: a cascade (a small model, then a big one) against the big model alone,
on the same prompts, at set escalation shares, in one run.

The input is `rows` distinct texts (`bench.bench_texts`) of one class task. The small model's
calibration is temperature 1 (its confidences unchanged: the bench sets the shares with the
thresholds, it does not measure calibration). A probe run of the small model alone gives its
confidences, and each share's threshold is the confidence at that quantile, so the share
escalated is what the ties in a random model's confidences allow (printed as measured). Every
run starts on a table of its own and loads its models as a night does (a cascade night loads
both), so the figures hold what a night pays: wall time, and device-seconds as the run report
counts them (each engine actor from its start to the run's end), with the seconds spent
answering beside them.

On paper, from the cost model (docs/performance.md): prefill costs about 2 FLOP per parameter
per prompt token on either model, so per row a cascade costs `small/big + share` of the big
model alone (Emot5-large 0.74 B, Emollama-chat-13b 13.0 B), and the GPU-hours per 1 M rows follow
from the H100 rate at a given prompt length.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from emoray.lake import locations
from emoray.quality.calibration import Calibration, save
from emoray.config import AnnotateConfig, CascadeStep, EngineConfig, S3Config
from emoray.cost import H100_BF16_FLOPS, PREFILL_EFFICIENCY
from emoray.pipeline import build_annotator, resolve_scoring
from emoray.lake.table import AnnotationTable
from emoray.tools.bench import bench_texts

SHARES = (0.1, 0.3, 0.6)
PAPER = {"small": ("Emot5-large", 0.74e9), "big": ("Emollama-chat-13b", 13.0e9)}
PAPER_PROMPT_TOKENS = 100
"""Prompt tokens per row of the on-paper GPU-hours (an AEB class prompt is about this long)."""


def _figures(report: dict, wall: float, rows: int) -> dict:
    """Rows per second, device-seconds and answering seconds of one run (or a cascade's steps),
    and device-hours per 1 M rows."""
    runs = report.get("steps", [report])
    engine_s = sum((r.get("usage") or {}).get("engine_s", 0.0) for r in runs)
    busy = sum(a["busy_s"] for r in runs for a in r.get("engine_actors", []))
    return {"wall_s": round(wall, 2), "rows_per_s": round(rows / wall, 1),
            "engine_s": round(engine_s, 1), "answering_s": round(busy, 2),
            "prompts": [r.get("prompts_sent", 0) for r in runs],
            "device_hours_per_1m_rows": round(engine_s / 3600 / rows * 1e6, 3)}


def _timed(run) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = run()
    return out, time.perf_counter() - t0


def cascade_bench(engine: EngineConfig, small: str, big: str, rows: int, task: str,
                  root: str, shares: tuple[float, ...] = SHARES) -> dict:
    """The measured runs (see the module's docstring) and each one's ratios to the big model
    alone."""
    from emoray.cascade import run_cascade

    texts = bench_texts(rows)
    src = f"{root}/texts"
    locations.write_texts(src, S3Config(), [f"b{i}" for i in range(rows)], texts)

    def config(out: str, model: str, **settings) -> AnnotateConfig:
        return AnnotateConfig(input=src, output=f"{root}/{out}", tasks=[task],
                              engine=engine.model_copy(update={"model": model}), **settings)

    alone, wall = _timed(lambda: build_annotator(config("big-alone", big)).run().as_dict())
    out = {"rows": rows, "task": task, "big_alone": _figures(alone, wall, rows)}
    probe, wall = _timed(lambda: build_annotator(config("small-alone", small)).run().as_dict())
    out["small_alone"] = _figures(probe, wall, rows)
    confidences = sorted(c for c in AnnotationTable(f"{root}/small-alone").read(
        ["confidence"])["confidence"].to_pylist() if c is not None)
    scoring = resolve_scoring(config("small-alone", small))
    cal = str(Path(root) / "small-calibration.json")
    save(Calibration(scoring.model.identity, {task: {
        "prompt_version": scoring.versions[task], "temperature": 1.0, "n": 0}}), cal, S3Config())
    out["cascades"] = []
    for share in shares:
        threshold = confidences[min(int(share * len(confidences)), len(confidences) - 1)]
        steps = [CascadeStep(model=small, calibration=cal, accept={task: threshold}),
                 CascadeStep(model=big)]
        report, wall = _timed(lambda: run_cascade(config(f"cascade-{share}", big,
                                                         cascade=steps)))
        figures = _figures(report, wall, rows)
        out["cascades"].append({
            "share_asked": share, "threshold": threshold,
            "share": report["escalation"][task]["share"], **figures,
            "rows_per_s_over_big_alone": round(figures["rows_per_s"]
                                               / out["big_alone"]["rows_per_s"], 3),
            "device_s_over_big_alone": round(figures["engine_s"]
                                             / out["big_alone"]["engine_s"], 3),
            "answering_s_over_big_alone": round(figures["answering_s"]
                                                / out["big_alone"]["answering_s"], 3)})
    out["on_paper"] = on_paper(shares)
    return out


def on_paper(shares: tuple[float, ...]) -> dict:
    """Emot5-large -> Emollama-chat-13b on H100 from the cost model: each share's cost over the
    13B alone, and GPU-hours per 1 M rows of `PAPER_PROMPT_TOKENS` prompt tokens."""
    (small, p_small), (big, p_big) = PAPER["small"], PAPER["big"]

    def gpu_hours(params: float) -> float:
        rate = PREFILL_EFFICIENCY * H100_BF16_FLOPS / (2 * params)
        return 1e6 * PAPER_PROMPT_TOKENS / rate / 3600

    alone = gpu_hours(p_big)
    return {"models": f"{small} -> {big}", "prompt_tokens_per_row": PAPER_PROMPT_TOKENS,
            "big_alone_gpu_hours_per_1m_rows": round(alone, 3),
            "cascades": [{"share": s, "gpu_hours_per_1m_rows":
                          round(gpu_hours(p_small) + s * alone, 3),
                          "over_big_alone": round(p_small / p_big + s, 3)} for s in shares]}


def main_cascade(engine: EngineConfig, small: str, big: str, rows: int, task: str,
                 as_json: bool) -> None:
    """`cascade_bench` on local Ray and a local folder, printed."""
    import tempfile

    from emoray.runtime import start_ray

    start_ray()
    with tempfile.TemporaryDirectory(prefix="emoray-bench-cascade-") as root:
        result = cascade_bench(engine, small, big, rows, task, root)
    print(json.dumps(result, indent=None if as_json else 2))
