"""`emoray evaluate --cascade`: a cascade's metrics on the AEB gold rows next to each of its
models alone, the share each model decided, and what each costs per 1 M rows.

Each model answers every gold row alone first (`evaluate.annotate_gold`, one table); the cascade
then runs over the same rows and table, so it decides from those stored answers and sends no
prompt (`emoray.cascade`: each step's held check). Its cost per 1 M rows is each model's
answering rate alone times the share of rows that reach it; the engines' start-up is left out
(on a few hundred gold rows it would dominate; a night pays it once per model).
"""

from __future__ import annotations

import json

import pyarrow.dataset as pads

from emoray.quality import aeb
from emoray.lake import locations, table
from emoray.config import AnnotateConfig, ConfigError
from emoray.quality.evaluate import _join, annotate_gold, gold_config, gold_requests, score_rows
from emoray.tasks import TASKS


def _per_million(summary: dict, gpu_hour_usd: float | None) -> dict:
    """Device-hours (and dollars) per 1 M rows from a run's answering seconds."""
    busy = sum(a["busy_s"] for a in summary.get("engine_actors", []))
    hours = busy / 3600 / summary["rows_out"] * 1e6 if summary["rows_out"] else None
    return {"answering_s": round(busy, 2), "device_hours_per_1m_rows":
            round(hours, 4) if hours is not None else None,
            "usd_per_1m_rows": round(hours * gpu_hour_usd, 2)
            if hours is not None and gpu_hour_usd is not None else None}


def evaluate_cascade(config: AnnotateConfig) -> dict:
    """Score `config`'s cascade and each of its models alone on the configured tasks' gold rows
    (`limit` per request); returns the comparison, also written as `<output>/cascade.json`."""
    from emoray.cascade import prepare, run_cascade

    config.require("evaluate.output")
    steps, _ = prepare(config)
    ev, out = config.evaluate, config.evaluate.output
    requests = gold_requests(ev.tasks or config.tasks)
    if not requests:
        raise ConfigError(f"none of the tasks {ev.tasks or config.tasks} has gold data; "
                          f"tasks with gold: {', '.join(n for n, t in TASKS.items() if t.source)}")
    gold = aeb.sample(aeb.extract(ev.data, config.s3, requests), ev.limit, ev.seed)
    price = config.cost.gpu_hour_usd
    alone = {}
    for step in steps:
        rows, summary = annotate_gold(config.model_copy(update={
            "engine": step.scoring.config.engine, "cascade": []}), gold, out)
        alone[step.scoring.model.identity] = {
            "tasks": {k: v["metrics"] for k, v in score_rows(gold, rows).items()},
            "rows": summary["rows_out"], **_per_million(summary, price)}
    report = run_cascade(gold_config(config, out, requests, incremental=True))
    if report["already_held"]:
        raise ConfigError(f"{_join(out, 'annotations')} already holds decisions of cascade "
                          f"{report['model']} for {report['already_held']} gold pairs, which "
                          "would leave its shares and cost unmeasured: use a fresh --output")
    final = table.AnnotationTable(_join(out, "annotations"), config.s3).read(
        filter=(pads.field("model") == report["model"])
        & (pads.field("run_id") == report["run_id"]))
    shares = {m: report["reached"].get(str(k), 0) / report["pairs"]
              for k, m in enumerate(alone, 1)} if report["pairs"] else {}
    hours = [alone[m]["device_hours_per_1m_rows"] for m in alone]
    cost = (round(sum(h * shares[m] for h, m in zip(hours, alone)), 4)
            if report["pairs"] and None not in hours else None)
    result = {
        "cascade": report["model"], "models": list(alone), "data": ev.data, "limit": ev.limit,
        "seed": ev.seed, "tasks": {k: v["metrics"] for k, v in score_rows(gold, final).items()},
        "alone": alone, "escalation": report["escalation"], "decided_by": report["decided_by"],
        "reached_share": {m: round(s, 4) for m, s in shares.items()},
        "prompts_sent": report["prompts_sent"], "device_hours_per_1m_rows": cost,
        "usd_per_1m_rows": round(cost * price, 2) if cost is not None and price is not None
        else None}
    fs, root = locations.filesystem_for(out, config.s3)
    with fs.open_output_stream(_join(root, "cascade.json")) as f:
        f.write(json.dumps(result, indent=2).encode())
    return result


def render(result: dict) -> str:
    """The comparison for a terminal: per task the cascade's headline metrics beside each
    model's alone, then shares and costs."""
    lines = [f"cascade {result['cascade']} on the gold rows ({' -> '.join(result['models'])}), "
             f"{result['prompts_sent']} prompts of its own"]
    for key, metrics in result["tasks"].items():
        name, value = next(iter(metrics.items()), ("-", None))
        beside = ", ".join(f"{m} {a['tasks'].get(key, {}).get(name, float('nan')):.4f}"
                           for m, a in result["alone"].items())
        lines.append(f"  {key:14} {name} {value:.4f} (alone: {beside})"
                     if value is not None else f"  {key:14} (no metric)")
    for key, e in sorted(result["escalation"].items()):
        lines.append(f"  {key:14} escalated {e['escalated']} of {e['pairs']} ({e['share']:.1%})")
    lines.append("  decided by: " + ", ".join(f"{m} {n}" for m, n in result["decided_by"].items()))
    lines.append("  device-hours per 1 M rows (answering time): cascade "
                 f"{result['device_hours_per_1m_rows']}, alone: " + ", ".join(
                     f"{m} {a['device_hours_per_1m_rows']}" for m, a in result["alone"].items()))
    if result["usd_per_1m_rows"] is not None:
        lines.append(f"  USD per 1 M rows: cascade {result['usd_per_1m_rows']}, alone: " + ", ".join(
            f"{m} {a['usd_per_1m_rows']}" for m, a in result["alone"].items()))
    return "\n".join(lines)
