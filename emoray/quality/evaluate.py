"""Evaluation on the Affective Evaluation Benchmark through the production path.

Gold rows (`emoray.quality.aeb`) are written as an input dataset whose `request` column names each row's
task, and annotated by the same `build_annotator` pipeline and engine a nightly run uses; the
committed rows are then joined back to the gold answers and scored (`emoray.quality.metrics`). Outputs:
`metrics.json`, `report.md` and `chart.png` under the evaluation's output folder, beside the
evaluation's own annotation table (`annotations/`).

Metrics are computed over rows whose answer parsed (status ok or truncated); the parse rate and
status counts say how many that is. Each request also gets the score of a majority baseline on
the same rows (always the most frequent gold answer; its Pearson r is 0.0 by definition).
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import yaml

from emoray.quality import aeb, calibration, charts
from emoray.lake import locations, table
from emoray.answers import Parsed
from emoray.config import AnnotateConfig, BudgetConfig, ConfigError, GateConfig
from emoray.quality.metrics import score
from emoray.statuses import USABLE
from emoray.tasks import TASKS, request_key, request_order, resolve, split_key


def _join(uri: str, *parts: str) -> str:
    return posixpath.join(uri.rstrip("/"), *parts)


def gold_requests(names: list[str]) -> list[str]:
    """Request keys of the tasks among `names` that have gold data."""
    return [r.key for r in resolve(names) if r.task.source]


def gold_config(config: AnnotateConfig, out: str, requests: list[str],
                **update) -> AnnotateConfig:
    """`config` reading the gold rows staged in `<out>/gold/` into `<out>/annotations/`, for
    `requests`, with none of the night's own run id, quality gate or budget."""
    return config.reading_staged(
        _join(out, "gold") + "/", "request", output=_join(out, "annotations") + "/",
        tasks=requests, run_id=None, gate=GateConfig(), budget=BudgetConfig(), **update)


def annotate_gold(config: AnnotateConfig, gold: pa.Table, out: str) -> tuple[pa.Table, dict]:
    """Annotate gold rows with the production pipeline into `<out>/annotations` (confidences
    left uncalibrated: the callers compare them with a calibration's); returns the run's
    committed rows and its summary."""
    from emoray.pipeline import build_annotator

    fs, root = locations.filesystem_for(out, config.s3)
    fs.create_dir(_join(root, "gold"), recursive=True)
    with fs.open_output_stream(_join(root, "gold", "gold.parquet")) as f:
        pq.write_table(gold.select(["id", "text", "request"]), f)
    requests = list(dict.fromkeys(gold["request"].to_pylist()))
    run = gold_config(config, out, requests, incremental=False, calibration=None, cascade=[])
    summary = build_annotator(run).run()
    rows = table.AnnotationTable(_join(out, "annotations"), config.s3).read(
        filter=pads.field("run_id") == summary.run_id)
    return rows, summary.as_dict()


def _majority(gold: list[Parsed]) -> list[Parsed]:
    """Predict the most frequent gold answer for every row (the mean, for regression)."""
    if gold and gold[0].labels is None and gold[0].label is None:
        mean = sum(p.score for p in gold) / len(gold)
        return [Parsed(score=mean)] * len(gold)
    key = Counter(repr(p) for p in gold).most_common(1)[0][0]
    return [next(p for p in gold if repr(p) == key)] * len(gold)


def pair_answers(gold: pa.Table, rows: pa.Table) -> dict[str, list[tuple[dict, dict | None]]]:
    """Per task request (in catalog order): each gold row with the committed answer to it
    (None when none committed)."""
    answers = {}
    for r in rows.to_pylist():
        key = request_key(r["task"], r["target"])
        answers[(r["doc_id"], key)] = r
    by_request: dict[str, list[dict]] = {}
    for g in gold.to_pylist():
        by_request.setdefault(g["request"], []).append(g)
    return {key: [(g, answers.get((g["id"], key))) for g in by_request[key]]
            for key in sorted(by_request, key=request_order)}


def parsed_pairs(task, pairs: list[tuple[dict, dict | None]]
                 ) -> list[tuple[Parsed, Parsed, dict]]:
    """(gold, answer, answer row) of the rows whose answer parsed."""
    return [(task.answer.parse(g["gold"]), Parsed(a["score"], a["label"], a["labels"]), a)
            for g, a in pairs if a and a["status"] in USABLE]


def confidence_report(task, scored: list[tuple[Parsed, Parsed, dict]],
                      fitted: calibration.Calibration | None) -> dict:
    """How well the answers' confidences say how right they are. A class task:
    ECE and Brier before and after `fitted` (None when it holds no temperature for the task).
    A regression task: Spearman's rho between confidence and absolute error (negative: more
    confident answers err less)."""
    conf = [a["raw_confidence"] for _, _, a in scored]
    if not task.answer.discrete:
        kept = [(c, abs(g.score - p.score)) for c, (g, p, _) in zip(conf, scored)
                if c is not None]
        return {"n": len(kept), "confidence_error_spearman":
                calibration.spearman([c for c, _ in kept], [e for _, e in kept])}
    right = [g == p for g, p, _ in scored]
    after, applied = None, None
    if fitted is not None:
        scaled, tags = calibration.calibrate_rows(
            fitted, [task.name] * len(scored), [a["prompt_version"] for _, _, a in scored],
            conf)
        if fitted.tag in tags:
            after, applied = calibration.report(scaled, right), fitted.tag
    return {"before": calibration.report(conf, right), "after": after, "calibration": applied}


def score_rows(gold: pa.Table, rows: pa.Table,
               fitted: calibration.Calibration | None = None) -> dict[str, dict]:
    """Per task request: n, status counts, parse rate, metrics on the parsed rows, the
    majority baseline's and the confidence report (`confidence_report`); targeted tasks also
    get an entry averaging their targets."""
    out: dict[str, dict] = {}
    for key, pairs in pair_answers(gold, rows).items():
        name, target = split_key(key)
        task = TASKS[name]
        got = [a for _, a in pairs]
        statuses = Counter(a["status"] if a else "missing" for a in got)
        scored = parsed_pairs(task, pairs)
        g_parsed = [g for g, _, _ in scored]
        parsed = sum(statuses[s] for s in USABLE)
        out[key] = {
            "task": name, "target": target or None, "n": len(pairs), "scored": len(scored),
            "parse_rate": round(parsed / len(pairs), 4) if pairs else 0.0,
            "status_counts": dict(statuses), "headline": task.metrics[0],
            "metrics": score(task, g_parsed, [p for _, p, _ in scored]),
            "baseline": score(task, g_parsed, _majority(g_parsed)),
            "prompt_version": got[0]["prompt_version"] if got and got[0] else None,
            "confidence": confidence_report(task, scored, fitted),
        }
    for name in dict.fromkeys(v["task"] for v in out.values() if v["target"]):
        parts = [v for v in out.values() if v["task"] == name and v["target"]]
        n = sum(v["n"] for v in parts)
        out[name] = {
            "task": name, "target": None, "n": n, "scored": sum(v["scored"] for v in parts),
            "parse_rate": round(sum(v["parse_rate"] * v["n"] for v in parts) / n, 4),
            "status_counts": dict(sum((Counter(v["status_counts"]) for v in parts), Counter())),
            "headline": parts[0]["headline"],
            "metrics": _mean([v["metrics"] for v in parts]),
            "baseline": _mean([v["baseline"] for v in parts]),
            "averaged_over": [v["target"] for v in parts], "prompt_version": None,
        }
    return dict(sorted(out.items(), key=lambda kv: request_order(kv[0])))


def _mean(dicts: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(sum(d[k] for d in dicts) / len(dicts), 4) for k in dicts[0]}


def load_references(path: str | None) -> list[dict]:
    """Reference score sets from `path` (missing file: none). Each set: name, source, scores
    {task: {metric: value}}, optional note."""
    if not path or not Path(path).is_file():
        return []
    sets = (yaml.safe_load(Path(path).read_text()) or {}).get("references", [])
    for s in sets:
        if not {"name", "source", "scores"} <= set(s):
            raise ConfigError(f"{path}: each reference needs name, source and scores; got "
                              f"{sorted(s)}")
    return sets


def _previous(path: str | None, config: AnnotateConfig) -> dict | None:
    if not path:
        return None
    fs, p = locations.filesystem_for(path, config.s3)
    try:
        with fs.open_input_stream(p) as f:
            return json.loads(f.read())
    except (FileNotFoundError, OSError) as e:
        raise locations.InputError(f"previous metrics {path} cannot be read: {e}") from None


def render_markdown(result: dict) -> str:
    refs = result["references"]
    prev = result.get("previous")
    head = ["task", "n", "parse rate", "statuses", "metric", "this run", "majority"]
    head += [r["name"] for r in refs] + (["previous"] if prev else [])
    lines = [
        f"# Evaluation of {result['model']} on the AEB",
        "",
        f"Run `{result['run_id']}`, {result['created_at']}; data `{result['data']}`, "
        f"limit {result['limit'] or 'none'} per task (seed {result['seed']}), instruction "
        f"template {result['template']}, constrained decoding {result['constrained']}. "
        "Metrics are computed on rows whose answer parsed; majority = always the most frequent "
        "gold answer on the same rows.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for key, v in result["tasks"].items():
        statuses = ", ".join(f"{k} {n}" for k, n in sorted(v["status_counts"].items()))
        for metric, value in v["metrics"].items():
            cells = [key, str(v["n"]), f"{v['parse_rate']:.2%}", statuses, metric,
                     f"{value:.4f}", f"{v['baseline'][metric]:.4f}"]
            cells += [_fmt(r["scores"].get(key, {}).get(metric)) for r in refs]
            if prev:
                cells.append(_fmt(prev["tasks"].get(key, {}).get("metrics", {}).get(metric)))
            lines.append("| " + " | ".join(cells) + " |")
    for r in refs:
        lines += ["", f"**{r['name']}**: {r['source']}" + (f" — {r['note']}" if r.get("note")
                                                            else "")]
    if prev:
        lines += ["", f"**previous**: run `{prev.get('run_id')}` of {prev.get('model')}, "
                  f"{prev.get('created_at')}"]
    lines += ["", "![headline metric per task](chart.png)", ""]
    calibrated = _calibrated(result)
    if calibrated:
        lines += ["## Confidence (class tasks)", "",
                  "How well `confidence` says an answer is right: expected calibration error "
                  f"({calibration.ECE_BINS} bins) and Brier's score of the confidence as the "
                  "probability of being right (0 is perfect for both), of the model's own "
                  "probabilities (before) and after the calibration file given "
                  f"({result.get('calibration') or 'none'}).", "",
                  "| task | n | ECE before | Brier before | ECE after | Brier after |",
                  "|---|---|---|---|---|---|"]
        for k, c in calibrated.items():
            after = c["after"] or {}
            lines.append(f"| {k} | {c['before']['n']} | {c['before']['ece']:.4f} | "
                         f"{c['before']['brier']:.4f} | {_fmt(after.get('ece'))} | "
                         f"{_fmt(after.get('brier'))} |")
        lines += ["", "![reliability per class task](reliability.png)", ""]
    spread = {k: v["confidence"] for k, v in result["tasks"].items()
              if "confidence_error_spearman" in v.get("confidence", {})}
    if spread:
        lines += ["## Confidence (regression tasks)", "",
                  "Spearman's rho between `confidence` and the absolute error (negative: "
                  "answers given with more confidence err less).", "",
                  "| task | n | rho |", "|---|---|---|"]
        lines += [f"| {k} | {c['n']} | {_fmt(c['confidence_error_spearman'])} |"
                  for k, c in spread.items()]
        lines.append("")
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def _calibrated(result: dict) -> dict[str, dict]:
    """The confidence report of each class task request that had answers."""
    return {k: v["confidence"] for k, v in result["tasks"].items()
            if v.get("confidence", {}).get("before", {}).get("n")}


def render_chart(result: dict) -> bytes:
    """PNG: the headline metric per task for this run, the majority baseline, each reference
    set and the previous run."""
    keys = list(result["tasks"])
    series = [("this run", [result["tasks"][k]["metrics"][result["tasks"][k]["headline"]]
                            for k in keys]),
              ("majority baseline", [result["tasks"][k]["baseline"][result["tasks"][k]["headline"]]
                                     for k in keys])]
    for r in result["references"]:
        series.append((r["name"], [r["scores"].get(k, {}).get(result["tasks"][k]["headline"])
                                   for k in keys]))
    if result.get("previous"):
        prev = result["previous"]["tasks"]
        series.append(("previous", [prev.get(k, {}).get("metrics", {}).get(
            result["tasks"][k]["headline"]) for k in keys]))
    fig, ax = charts.figure((max(6, 0.9 * len(keys) + 2), 4.5))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series):
        xs = [j + i * width for j, v in enumerate(values) if v is not None]
        ax.bar(xs, [v for v in values if v is not None], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(keys))])
    ax.set_xticklabels([f"{k}\n({result['tasks'][k]['headline']})" for k in keys],
                       rotation=45, ha="right", fontsize=8)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylabel("headline metric")
    ax.set_title(f"{result['model']} on the AEB" + (f" ({result['title_note']})"
                                                    if result.get("title_note") else ""))
    ax.legend(fontsize=8)
    return charts.png(fig)


def render_reliability(result: dict) -> bytes | None:
    """PNG: accuracy against confidence per class task (the diagonal is a calibrated model),
    or None when no class task was evaluated."""
    curves = _calibrated(result)
    if not curves:
        return None
    fig, ax = charts.figure((5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--", label="calibrated")
    for i, (key, c) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        for when, style in (("before", ":"), ("after", "-")):
            if c[when]:
                points = c[when]["reliability"]
                ax.plot([p["confidence"] for p in points], [p["accuracy"] for p in points],
                        marker="o", markersize=3, color=colour, linestyle=style,
                        label=f"{key} {when} (ECE {c[when]['ece']:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"confidence ({calibration.ECE_BINS} bins)")
    ax.set_ylabel("share of answers right")
    ax.set_title(f"reliability of {result['model']}" + (
        f"\n({result['title_note']})" if result.get("title_note") else ""), fontsize=9)
    ax.legend(fontsize=7)
    return charts.png(fig)


def write_outputs(config: AnnotateConfig, out: str, result: dict) -> list[str]:
    fs, root = locations.filesystem_for(out, config.s3)
    written = []
    reliability = render_reliability(result)
    for name, data in [("metrics.json", json.dumps(result, indent=2).encode()),
                       ("report.md", render_markdown(result).encode()),
                       ("chart.png", render_chart(result)),
                       *([("reliability.png", reliability)] if reliability else [])]:
        with fs.open_output_stream(_join(root, name)) as f:
            f.write(data)
        written.append(_join(out, name))
    return written


def evaluate_gold(config: AnnotateConfig, gold: pa.Table, out: str,
                  title_note: str | None = None) -> dict:
    """Annotate `gold` through the pipeline, score it and write the three outputs to `out`."""
    from emoray.models import resolve_model
    from emoray.models import is_tiny_model

    ev = config.evaluate
    if title_note is None and is_tiny_model(config.engine.model):
        title_note = "tiny random-weight TEST model: scores are meaningless"
    model = resolve_model(config.engine.model)
    fitted = (calibration.load(config.calibration, config.s3, model) if config.calibration
              else None)
    if fitted:
        config = config.model_copy(update={"engine": fitted.engine(config.engine)})
    rows, summary = annotate_gold(config, gold, out)
    result = {
        "model": model.name, "run_id": summary["run_id"],
        "calibration": fitted.tag if fitted else None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": ev.data, "limit": ev.limit, "seed": ev.seed,
        "template": config.engine.template, "constrained": config.engine.constrained,
        "title_note": title_note,
        "tasks": score_rows(gold, rows, fitted),
        "references": load_references(ev.references),
        "previous": _previous(ev.previous, config),
        "run": {k: summary[k] for k in ("rows_out", "prompts_sent", "wall_s", "rows_per_s")},
    }
    n = sum(v["n"] for v in result["tasks"].values() if not v.get("averaged_over"))
    parsed = sum(v["parse_rate"] * v["n"] for v in result["tasks"].values()
                 if not v.get("averaged_over"))
    result["summary"] = {"n": n, "parse_rate": round(parsed / n, 4) if n else 0.0}
    result["outputs"] = write_outputs(config, out, result)
    return result


def evaluate(config: AnnotateConfig, title_note: str | None = None) -> dict:
    """`emoray evaluate`: the AEB gold rows of the configured tasks, `limit` per request."""
    config.require("evaluate.output")
    ev = config.evaluate
    requests = gold_requests(ev.tasks or config.tasks)
    if not requests:
        raise ConfigError(f"none of the tasks {ev.tasks or config.tasks} has gold data; "
                          f"tasks with gold: {', '.join(n for n, t in TASKS.items() if t.source)}")
    gold = aeb.sample(aeb.extract(ev.data, config.s3, requests), ev.limit, ev.seed)
    return evaluate_gold(config, gold, ev.output, title_note)


def render_summary(result: dict) -> str:
    lines = [f"evaluated {result['model']} on {result['summary']['n']} gold rows "
             f"(parse rate {result['summary']['parse_rate']:.2%})"]
    for key, v in result["tasks"].items():
        metrics = ", ".join(f"{k} {x:.4f}" for k, x in v["metrics"].items())
        lines.append(f"  {key:14} n={v['n']:<5} parse {v['parse_rate']:.2%}  {metrics}")
    for key, c in _calibrated(result).items():
        after = (f"after {c['after']['ece']:.4f} / {c['after']['brier']:.4f}" if c["after"]
                 else "after: no calibration given (fit one with `emoray calibrate`)")
        lines.append(f"  {key:14} confidence ECE / Brier: before {c['before']['ece']:.4f} / "
                     f"{c['before']['brier']:.4f}, {after}")
    lines.append("outputs: " + ", ".join(result["outputs"]))
    return "\n".join(lines)
