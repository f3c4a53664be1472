"""The per-run label report for analysts: how each task's labels and scores are distributed in
what a run wrote, as JSON, a Markdown table and a PNG, next to the run's report
(`_reports/labels/<run>.{json,md,png}`; a subfolder, so `emoray runs` does not take it for a
run report).

Counts are accumulated batch by batch on the driver with Arrow group-bys (no per-row Python), so
the report costs nothing noticeable beside the write.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from emoray.quality import charts
from emoray.statuses import USABLE
from emoray.lake.table import REPORTS
from emoray.tasks import TASKS, request_key, request_order, split_key


def _counts(t: pa.Table, by: list[str]) -> list[dict]:
    return t.group_by(by, use_threads=False).aggregate([([], "count_all")]).to_pylist()


class LabelStats:
    """Counts of statuses, score values and multi-labels per task request, and the sum of
    confidences per calibration that made them."""

    def __init__(self):
        self.status: dict[str, Counter] = {}
        self.values: dict[str, Counter] = {}
        self.confidence: dict[str, Counter] = {}
        self.calibration: dict[str, Counter] = {}

    def add(self, batch: pa.Table) -> None:
        if not batch.num_rows:
            return
        for r in _counts(batch, ["task", "target", "status"]):
            self.status.setdefault(request_key(r["task"], r["target"]), Counter())[r["status"]] += \
                r["count_all"]
        answered = batch.filter(pc.is_in(batch["status"], pa.array(USABLE)))
        for r in _counts(answered.filter(pc.is_valid(answered["score"])),
                         ["task", "target", "score"]):
            self.values.setdefault(request_key(r["task"], r["target"]), Counter())[r["score"]] += \
                r["count_all"]
        rated = answered.filter(pc.is_valid(answered["confidence"]))
        for r in rated.group_by(["task", "target", "calibration"], use_threads=False).aggregate(
                [("confidence", "sum"), ("confidence", "count")]).to_pylist():
            key = request_key(r["task"], r["target"])
            self.confidence.setdefault(key, Counter()).update(
                {"sum": r["confidence_sum"], "rows": r["confidence_count"]})
            self.calibration.setdefault(key, Counter())[r["calibration"]] += \
                r["confidence_count"]
        sets = answered.filter(pc.is_valid(answered["labels"]))
        if sets.num_rows:
            parents = pc.list_parent_indices(sets["labels"])
            flat = pa.table({"task": pc.take(sets["task"], parents),
                             "target": pc.take(sets["target"], parents),
                             "label": pc.list_flatten(sets["labels"])})
            for r in _counts(flat, ["task", "target", "label"]):
                self.values.setdefault(request_key(r["task"], r["target"]), Counter())[r["label"]] += \
                    r["count_all"]

    def summary(self) -> dict[str, dict]:
        """Per request: rows, status counts, and the distribution: class counts (ordinal),
        label counts (multi-label, a row counts once per label) or a histogram with mean and
        standard deviation (regression)."""
        out = {}
        for key in sorted(self.status, key=request_order):
            task = TASKS[split_key(key)[0]]
            values = self.values.get(key, Counter())
            entry = {"rows": sum(self.status[key].values()), "status_counts": dict(self.status[key]),
                     "kind": task.answer.kind}
            entry.update(task.answer.summarize(values))
            rated = self.confidence.get(key)
            if rated:
                entry["confidence"] = {"rows": rated["rows"],
                                       "mean": round(rated["sum"] / rated["rows"], 4),
                                       "calibration": dict(self.calibration[key])}
            out[key] = entry
        return out


def render_markdown(run_id: str, model: str, summary: dict) -> str:
    lines = [f"# Labels of run {run_id} ({model})", "",
             "Distribution of each task's answers among rows with status ok or truncated; "
             "multi-label rows count once per label.", ""]
    for key, e in summary.items():
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(e["status_counts"].items()))
        conf = e.get("confidence")
        lines += [f"## {key}", "", f"{e['rows']} rows ({statuses})"
                  + (f"; mean {e['mean']}, std {e['std']}" if e.get("mean") is not None else "")
                  + (f"; mean confidence {conf['mean']} ("
                     + ", ".join(f"{k} {v}" for k, v in sorted(conf["calibration"].items()))
                     + ")" if conf else ""),
                  "", "| value | rows | share |", "|---|---|---|"]
        dist = e.get("classes") or e.get("labels") or e.get("histogram")
        total = sum(dist.values()) or 1
        lines += [f"| {k} | {v} | {v / total:.1%} |" for k, v in dist.items()]
        lines.append("")
    lines.append(f"![label distributions]({run_id}.png)")
    return "\n".join(lines) + "\n"


def render_chart(run_id: str, model: str, summary: dict) -> bytes:
    keys = list(summary) or ["(no rows)"]
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = charts.figure((3.6 * cols, 2.8 * rows), (rows, cols))
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, key in zip(axes.flat, summary):
        e = summary[key]
        dist = e.get("classes") or e.get("labels") or e.get("histogram")
        ax.bar(range(len(dist)), list(dist.values()), color="tab:blue")
        ax.set_xticks(range(len(dist)))
        ax.set_xticklabels([k.split(":")[0] if "classes" in e else k for k in dist],
                           rotation=60, ha="right", fontsize=6)
        ax.set_title(key, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"run {run_id} ({model}): label distributions", fontsize=10)
    return charts.png(fig, dpi=100)


def write_label_report(fs: pafs.FileSystem, root: str, run_id: str, model: str,
                       stats: LabelStats) -> list[str]:
    """Write `_reports/labels/<run>.{json,md,png}` under the table root; returns their paths."""
    summary = stats.summary()
    folder = posixpath.join(root, REPORTS, "labels")
    fs.create_dir(folder, recursive=True)
    out = []
    for suffix, data in [
        ("json", json.dumps({"run_id": run_id, "model": model, "tasks": summary},
                            indent=2).encode()),
        ("md", render_markdown(run_id, model, summary).encode()),
        ("png", render_chart(run_id, model, summary)),
    ]:
        path = posixpath.join(folder, f"{run_id}.{suffix}")
        with fs.open_output_stream(path) as f:
            f.write(data)
        out.append(path)
    return out
