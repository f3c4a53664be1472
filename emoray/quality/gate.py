"""The quality gate of a nightly run: before the lake is annotated, a small gold canary set is
annotated through the same pipeline, model and prompts, and scored; a metric below its threshold
or a parse rate below the minimum stops the run and says why.

The canary defaults to the set shipped with emoray (`emoray/data/canary.jsonl`, drawn from the
AEB by `emoray canary`); its evaluation lands under `<output>/_gate/<run>/` (metrics.json,
report.md, chart.png and `gate.json` with the verdict), beside but outside the annotation table.
"""

from __future__ import annotations

import json
import posixpath
from importlib import resources

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
import pyarrow.parquet as pq

from emoray.quality import aeb
from emoray.lake import locations
from emoray.config import AnnotateConfig, GateConfig
from emoray.errors import EXIT_GATE, EmorayError
from emoray.tasks import resolve


class GateError(EmorayError, RuntimeError):
    """The canary scored below the gate; the lake was not annotated."""

    exit_code = EXIT_GATE


def default_canary() -> str:
    return str(resources.files("emoray.data").joinpath("canary.jsonl"))


def read_gold(uri: str, config: AnnotateConfig) -> pa.Table:
    """Gold rows (id, text, request, gold) from a JSONL or Parquet file."""
    fs, path = locations.filesystem_for(uri, config.s3)
    try:
        with fs.open_input_file(path) as f:
            data = pq.read_table(f) if path.endswith(".parquet") else pajson.read_json(f)
    except (FileNotFoundError, OSError, pa.ArrowInvalid) as e:
        raise locations.InputError(f"canary {uri} cannot be read: {e}") from None
    missing = [c for c in ("id", "text", "request", "gold") if c not in data.column_names]
    if missing:
        raise locations.InputError(f"canary {uri} lacks columns {missing}; write it with "
                                   "`emoray canary`")
    return data.select(["id", "text", "request", "gold"]).cast(
        pa.schema([(c, pa.string()) for c in ("id", "text", "request", "gold")]))


def write_canary(data: str, out: str, requests: list[str], limit: int, seed: int,
                 config: AnnotateConfig) -> int:
    """Draw `limit` gold rows per request from the AEB folder `data` into JSONL `out`."""
    gold = aeb.sample(aeb.extract(data, config.s3, requests), limit, seed)
    fs, path = locations.filesystem_for(out, config.s3)
    lines = [json.dumps(r, ensure_ascii=False)
             for r in gold.select(["id", "text", "request", "gold"]).to_pylist()]
    with fs.open_output_stream(path) as f:
        f.write(("\n".join(lines) + "\n").encode())
    return gold.num_rows


def verdict(result: dict, gate: GateConfig) -> list[str]:
    """Reasons the canary result fails the gate (empty: it passes)."""
    failures = []
    for key, v in result["tasks"].items():
        if v["parse_rate"] < gate.min_parse_rate:
            failures.append(f"{key} parse rate {v['parse_rate']:.2%} < "
                            f"{gate.min_parse_rate:.2%} ({v['status_counts']})")
    for key, minimums in gate.thresholds.items():
        got = result["tasks"].get(key)
        if got is None:
            failures.append(f"threshold on {key}: the canary has no rows for it")
            continue
        for metric, low in minimums.items():
            value = got["metrics"].get(metric)
            if value is None:
                failures.append(f"threshold on {key}.{metric}: {key} has no metric {metric!r} "
                                f"(it has {', '.join(got['metrics'])})")
            elif value < low:
                failures.append(f"{key} {metric} {value:.4f} < {low} (canary n={got['scored']})")
    return failures


def gated_run(annotator):
    """Run an annotation job (`pipeline.Annotator`) with the quality gate as its first step
    under the table's lease, when the job's config enables it; the canary's engine stays warm
    for the night (`engines.pool.keep_warm`: one model load for both)."""
    from emoray.engines.pool import keep_warm

    with keep_warm():
        return annotator.run(gate=run_gate)


def run_gate(config: AnnotateConfig, run_id: str) -> dict:
    """Score the canary for this run's tasks; raise GateError naming every miss."""
    from emoray.quality.evaluate import evaluate_gold

    gate = config.gate
    wanted = [r.key for r in resolve(config.tasks)]
    gold = read_gold(gate.canary or default_canary(), config)
    gold = gold.filter(pc.is_in(gold["request"], pa.array(wanted, pa.string())))
    if not gold.num_rows:
        raise GateError(f"quality gate: the canary has no rows for the tasks {wanted}; give "
                        "a canary covering them (`emoray canary`) or run with --no-gate")
    out = posixpath.join(config.output.rstrip("/"), "_gate", run_id)
    result = evaluate_gold(config, gold, out, title_note="quality gate canary")
    failures = verdict(result, gate)
    ungated = [k for k in wanted if k not in result["tasks"]]
    report = {"run_id": run_id, "passed": not failures, "failures": failures,
              "ungated_requests": ungated, "thresholds": gate.thresholds,
              "min_parse_rate": gate.min_parse_rate, "canary_rows": gold.num_rows,
              "evaluation": out}
    fs, root = locations.filesystem_for(out, config.s3)
    with fs.open_output_stream(posixpath.join(root, "gate.json")) as f:
        f.write(json.dumps(report, indent=2).encode())
    if failures:
        raise GateError("quality gate failed, the lake was not annotated:\n  "
                        + "\n  ".join(failures)
                        + f"\n(details: {out}/report.md; --no-gate annotates anyway)")
    return report
