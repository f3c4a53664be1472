"""What a night costs: estimated before it runs (`--dry-run`), measured after (the run report).

The estimate is the cost model of docs/performance.md: prefill dominates (answers are 1-8
tokens, class tasks none), a forward pass costs about 2 FLOP per parameter per token, and vLLM
reaches about half of a GPU's dense bf16 peak on large batches. So one GPU handles
`0.5 * peak / (2 * parameters)` prompt tokens per second, unless `cost.tokens_per_s` gives a
measured figure. The measurement is what the engines held: from each engine actor's start to
the end of the run, times its devices (GPUs, or one per CPU actor).
"""

from __future__ import annotations

import json
from pathlib import Path

from emoray.config import CostConfig
from emoray.models import ModelSpec, weight_files

H100_BF16_FLOPS = 989e12
"""Dense bf16 peak of an H100 SXM (NVIDIA's datasheet)."""
PREFILL_EFFICIENCY = 0.5
CATALOG_PARAMS = {"7b": 6.74e9, "13b": 13.0e9, "large": None}
"""Parameters by the size in an EmoLLMs name (LLaMA-2 7B/13B; OPT-13B and BLOOM-7B1 are within a
few percent). "large" names two sizes (T5-large 0.74 B, BART-large 0.41 B) served by the
Transformers engine, which the prefill rule above does not describe: no estimate for them
unless `cost.tokens_per_s` gives a measured rate."""


def parameters(model: ModelSpec) -> float | None:
    """Parameters of a catalog model (from its name) or a local checkpoint (its safetensors
    headers); None when unknown."""
    if Path(model.source).is_dir():
        total = 0
        for f in (f for f in weight_files(model.source) if f.suffix == ".safetensors"):
            with f.open("rb") as fh:
                header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
            for name, t in header.items():
                if name != "__metadata__":
                    n = 1
                    for d in t["shape"]:
                        n *= d
                    total += n
        return float(total) or None
    size = model.name.lower().rsplit("-", 1)[-1]
    return CATALOG_PARAMS.get(size)


def device_of(resources: dict) -> str:
    """`gpu` or `cpu`: what one engine actor holds (`engine.engine_resources`)."""
    return "gpu" if resources.get("num_gpus") else "cpu"


def devices_per_engine(resources: dict) -> int:
    """Devices one engine actor holds (`engine.engine_resources`): its GPUs, or 1 on CPU."""
    return int(resources.get("num_gpus") or 1)


def tokens_per_s(cost: CostConfig, model: ModelSpec, on_gpu: bool) -> float | None:
    """Prompt tokens one device processes per second: measured (cost.tokens_per_s), else the
    GPU cost model; None on CPU without a measurement."""
    if cost.tokens_per_s:
        return cost.tokens_per_s
    params = parameters(model) if on_gpu else None
    return PREFILL_EFFICIENCY * H100_BF16_FLOPS / (2 * params) if params else None


def estimate(prompt_tokens: int, cost: CostConfig, model: ModelSpec, on_gpu: bool,
             devices: int) -> dict:
    """Device-hours, hours on the configured devices, and dollars for `prompt_tokens`."""
    rate = tokens_per_s(cost, model, on_gpu)
    out = {"tokens_per_s_per_device": round(rate, 1) if rate else None,
           "rate_source": ("cost.tokens_per_s" if cost.tokens_per_s else
                           "cost model (H100 bf16)" if rate else None),
           "device_hours": None, "hours": None, "cost_usd": None}
    if rate:
        device_hours = prompt_tokens / rate / 3600
        out.update(device_hours=round(device_hours, 4), hours=round(device_hours / devices, 4))
        if cost.gpu_hour_usd is not None:
            out["cost_usd"] = round(device_hours * cost.gpu_hour_usd, 4)
    return out


def usage(engine_s: float, rows_out: int, cost: CostConfig) -> dict:
    """What a run's engines held (`engine_s`: device-seconds) and cost."""
    device_hours = engine_s / 3600
    out = {"engine_s": round(engine_s, 1), "device_hours": round(device_hours, 4),
           "cost_usd": None, "usd_per_1m_rows": None}
    if cost.gpu_hour_usd is not None:
        out["cost_usd"] = round(device_hours * cost.gpu_hour_usd, 4)
        if rows_out:
            out["usd_per_1m_rows"] = round(out["cost_usd"] / rows_out * 1e6, 4)
    return out
