"""`emoray calibrate`: fit one temperature per class task on the AEB dev sample, decide per
regression task whether the expected value or the greedy answer scores it better, and write the
calibration file `annotate --calibration` applies.

The dev rows run through the production pipeline and engine (`evaluate.annotate_gold`), so the
confidences fitted are exactly those a nightly run stores; the temperatures (`calibration`)
are fitted per task over all its targets. The file records the model's identity and each
task's prompt version: annotate refuses a file fitted for another model and leaves a task
whose prompt changed uncalibrated. The before/after figures in the file are measured on the
rows fitted on (in-sample); `emoray evaluate --calibration FILE` measures on held-out rows.
"""

from __future__ import annotations

import posixpath
from datetime import datetime, timezone

from emoray.quality import aeb, calibration
from emoray.config import AnnotateConfig, ConfigError
from emoray.quality.evaluate import annotate_gold, pair_answers, parsed_pairs
from emoray.quality.metrics import pearson
from emoray.models import resolve_model
from emoray.tasks import TASKS, resolve, split_key

FILE = "calibration.json"


def dev_requests(names: list[str]) -> list[str]:
    """Request keys of the tasks among `names` with AAID dev gold data."""
    return [r.key for r in resolve(names) if r.task.source == "aaid"]


def calibrate(config: AnnotateConfig, output: str) -> dict:
    """Annotate the dev sample with `config`'s model, fit a temperature per class task and
    write `<output>/calibration.json`; returns the file's content plus its path."""
    ev = config.evaluate
    requests = dev_requests(ev.tasks or config.tasks)
    if not any(TASKS[split_key(k)[0]].answer.discrete for k in requests):
        raise ConfigError(f"none of the tasks {ev.tasks or config.tasks} is a class task with "
                          "dev data; "
                          "calibrate needs one of "
                          + ", ".join(n for n, t in TASKS.items()
                                      if t.source == "aaid" and t.answer.discrete))
    model = resolve_model(config.engine.model)
    gold = aeb.sample(aeb.extract(ev.data, config.s3, requests, aaid_files=(aeb.AAID_DEV,)),
                      ev.limit, ev.seed)
    regression = [n for n in dict.fromkeys(split_key(k)[0] for k in requests)
                  if not TASKS[n].answer.discrete]
    run = config.model_copy(update={"engine": config.engine.model_copy(
        update={"expected_score": regression})})  # greedy stays in raw_output
    rows, summary = annotate_gold(run, gold, output)
    by_task: dict[str, list] = {}
    for key, pairs in pair_answers(gold, rows).items():
        task = TASKS[split_key(key)[0]]
        by_task.setdefault(task.name, []).extend(parsed_pairs(task, pairs))
    scoring = {name: score_rules(TASKS[name], by_task.get(name, [])) for name in regression}
    temperatures, figures, skipped, thresholds, unmet = {}, {}, {}, {}, {}
    for name, scored in by_task.items():
        if not TASKS[name].answer.discrete:
            continue
        conf = [a["raw_confidence"] for _, _, a in scored if a["raw_confidence"] is not None]
        right = [g == p for g, p, a in scored if a["raw_confidence"] is not None]
        t = calibration.fit_scale(conf, right)
        if t is None:
            skipped[name] = (f"{len(conf)} answers, {sum(right)} right: a temperature needs at "
                             f"least {calibration.MIN_ROWS}, two or more of them right and two "
                             "or more wrong")
            continue
        temperatures[name] = {"prompt_version": scored[0][2]["prompt_version"],
                              "temperature": round(t, 6), "n": len(conf)}
        before, after = (calibration.report(c, right)
                         for c in (conf, calibration.scale(conf, t).tolist()))
        figures[name] = {w: {k: r[k] for k in ("n", "ece", "brier")}
                         for w, r in (("before", before), ("after", after))}
        if ev.max_loss is not None:
            found = calibration.lowest_threshold(calibration.scale(conf, t), right, ev.max_loss)
            if found is None:
                unmet[name] = (f"no threshold keeps the accepted answers right "
                               f"{1 - ev.max_loss:.0%} of the time")
            else:
                thresholds[name] = found
    fitted = calibration.Calibration(model.identity, temperatures, {
        "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": ev.data or "emoray/data/aeb (shipped)", "file": aeb.AAID_DEV,
        "limit": ev.limit, "seed": ev.seed, "run_id": summary["run_id"],
        "in_sample": figures, "skipped": skipped, "scoring": scoring},
        [n for n, s in scoring.items() if s["better"] == "expected"], thresholds)
    path = posixpath.join(output.rstrip("/"), FILE)
    calibration.save(fitted, path, config.s3)
    return {"path": path, "version": fitted.version, "tag": fitted.tag, "model": fitted.model,
            "temperatures": temperatures, "expected_score": fitted.expected_score,
            "thresholds": thresholds, "thresholds_unmet": unmet,
            **fitted.fitted}


def score_rules(task, scored: list) -> dict:
    """Pearson's r of a regression task's greedy answers (`raw_output`) and of its expected
    values (`score`, from a run scoring it so) with the gold scores (`metrics.pearson`: 0
    when either side is constant); the better one, greedy on a tie."""
    gold = [g for g, _, _ in scored]
    greedy = [task.answer.parse(a["raw_output"]) for _, _, a in scored]
    expected = [p for _, p, _ in scored]
    r = {name: round(pearson(task, gold, values), 4) for name, values in
         (("greedy", greedy), ("expected", expected))}
    return {"n": len(scored), "pearson": r,
            "better": "expected" if r["expected"] > r["greedy"] else "greedy"}


def render(result: dict) -> str:
    lines = [f"calibration {result['tag']} for {result['model']} written to {result['path']}",
             f"  fitted on {result['file']} (limit {result['limit'] or 'none'}), run "
             f"{result['run_id']}; ECE / Brier on the rows fitted on:"]
    for name, t in result["temperatures"].items():
        f = result["in_sample"][name]
        lines.append(f"  {name:8} T={t['temperature']:<9.4g} n={t['n']:<5} before "
                     f"{f['before']['ece']:.4f} / {f['before']['brier']:.4f}, after "
                     f"{f['after']['ece']:.4f} / {f['after']['brier']:.4f}")
    for name, t in result["thresholds"].items():
        lines.append(f"  {name:8} accept at >= {t['threshold']:.4f}: {t['accepted_share']:.1%} "
                     f"of {t['n']} dev answers, {t['accuracy']:.1%} right (max loss "
                     f"{t['max_loss']:g})")
    lines += [f"  {name:8} no cascade threshold: {why}"
              for name, why in result["thresholds_unmet"].items()]
    lines += [f"  {name:8} not fitted: {why}" for name, why in result["skipped"].items()]
    for name, s in result["scoring"].items():
        r = s["pearson"]
        lines.append(f"  {name:8} Pearson r on n={s['n']}: greedy {r['greedy']:.4f}, expected "
                     f"value {r['expected']:.4f}: scored by {s['better']}")
    lines.append(f"apply it: emoray annotate ... --calibration {result['path']}")
    return "\n".join(lines)
