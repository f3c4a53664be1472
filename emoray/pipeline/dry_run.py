"""The dry run: what a run would read, skip, send and cost, with no engine and nothing written
(`emoray annotate --dry-run`; the budget's check before a run)."""

from __future__ import annotations

from collections import Counter

from emoray import cost, stages
from emoray.cost import device_of, devices_per_engine
from emoray.pipeline.plan import Plan
from emoray.pipeline.stats import RunStats
from emoray.tasks import TASKS


def render_dry_run(d: dict) -> str:
    """A dry run as text: what would be read, skipped, sent and what it would cost."""
    lines = [f"dry run of {d['input']} -> {d['output']} ({d['model']}): no engine started, "
             "nothing written",
             *([f"  input            Delta table {d['input_table_id']}, version "
                f"{d['input_version']}"] if d.get("input_format") == "delta" else []),
             f"  rows in          {d['rows_in']}",
             f"  already held     {d['already_held']} of {d['pairs']} row x task pairs",
             *([f"  waves            {d['waves']} (wave_rows), served by the same engine "
                "actors"] if d["waves"] > 1 else []),
             f"  {'request':<14}{'rows':>10}{'prompts':>10}{'reused':>10}{'prompt tokens':>15}"]
    for key, r in [*d["by_request"].items(), ("total", {
            "rows": d["rows_to_write"], "prompts": d["prompts"], "reused": d["reused"],
            "prompt_tokens": d["prompt_tokens"]})]:
        tokens = "-" if d["prompt_tokens"] is None else r["prompt_tokens"]
        lines.append(f"  {key:<14}{r['rows']:>10}{r['prompts']:>10}{r['reused']:>10}"
                     f"{tokens:>15}")
    e, unit = d["estimate"], d["device"].upper()
    if d["note"]:
        lines.append(f"  ({d['note']})")
    if e and e["device_hours"] is not None:
        dollars = (f", ${e['cost_usd']:.2f}" if e["cost_usd"] is not None
                   else "; set cost.gpu_hour_usd for dollars")
        lines.append(f"  estimate         {e['device_hours']:.4f} {unit}-hours of prefill "
                     f"({e['tokens_per_s_per_device']:.0f} prompt tokens/s per {unit}, "
                     f"{e['rate_source']}), {e['hours'] * 60:.1f} min on {d['devices']} "
                     f"{unit}(s){dollars}; engine start-up not included")
    elif e is not None:
        lines.append(f"  estimate         not made for {unit} engines: set cost.tokens_per_s "
                     "(prompt_tokens / engine_s of an earlier run's report, or `emoray bench`)")
    if d["gate_skipped"]:
        lines.append("  (the quality gate is not run by a dry run)")
    return "\n".join(lines)



def dry_run(plan: Plan) -> dict:
    """What a run of `plan`'s job would do, with no engine and nothing written: rows in, row x
    task pairs already held, per task request the rows to write, prompts to send, stored answers
    to reuse and prompt tokens (the checkpoint's tokenizer, the engine's truncation rule), and
    the estimated device-hours and cost (`emoray.cost`)."""
    import ray

    job = plan.job
    stats = ray.remote(RunStats).options(num_cpus=0).remote()
    fitter, note = _fitter(job)
    by_request = _by_request(plan, stats, fitter)
    counts = ray.get(stats.get.remote())
    ray.kill(stats)
    totals = sum(by_request.values(), Counter())
    resources = job.resources()
    devices = devices_per_engine(resources) * job.config.concurrency
    return {
        "input": job.config.input, **job.source_record, "output": job.config.output,
        "model": job.model.identity,
        "rows_in": counts.get("rows_in", 0), "pairs": counts.get("pairs", 0),
        "waves": plan.waves,
        "already_held": counts.get("pairs", 0) - totals["rows"],
        "rows_to_write": totals["rows"], "prompts": totals["prompts"],
        "reused": totals["reused"],
        "prompt_tokens": totals["prompt_tokens"] if fitter else None,
        "by_request": {k: {f: v.get(f, 0) for f in ("rows", "prompts", "reused",
                                                    "prompt_tokens")}
                       for k, v in by_request.items()},
        "device": device_of(resources), "devices": devices,
        "estimate": cost.estimate(totals["prompt_tokens"], job.config.cost, job.model,
                                  device_of(resources) == "gpu", devices)
        if fitter else None,
        "note": note, "gate_skipped": job.config.gate.enabled,
    }


def _fitter(job):
    """The model's prompt fitter, or None and why (a hub id without hub access: the dry run
    then counts rows and prompts but not tokens)."""
    from emoray.prompting import PromptFitter

    try:
        return PromptFitter.for_model(job.config.engine, job.model), None
    except Exception as e:
        return None, f"prompt tokens not counted: no tokenizer for {e}"


def _by_request(plan: Plan, stats, fitter) -> dict[str, Counter]:
    """Per task request: rows to write, prompts to send, stored answers reused, prompt tokens,
    counted over every wave's plan."""
    job = plan.job
    by_request: dict[str, Counter] = {r.key: Counter() for r in job.requests}
    keys = {(r.task.name, r.target): r.key for r in job.requests}
    for batch in (b for wave in plan.each_wave for b in plan.planned(
            stats, wave).iter_batches(batch_format="pyarrow", batch_size=None)):
        rows = batch.select(["task", "target", "text", "text_status", "cached_output",
                             "doc_ids"]).to_pylist()
        send = [r for r in rows if stages.sends_prompt(r["text_status"], r["cached_output"])]
        tokens = (fitter.prompt_tokens([TASKS[r["task"]] for r in send],
                                       [r["text"] for r in send], [r["target"] for r in send])
                  if fitter else [0] * len(send))
        for r in rows:
            by_request[keys[r["task"], r["target"]]].update(
                rows=len(r["doc_ids"]), reused=int(r["cached_output"] is not None))
        for r, n in zip(send, tokens):
            by_request[keys[r["task"], r["target"]]].update(prompts=1, prompt_tokens=n)
    return by_request
