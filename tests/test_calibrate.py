"""`emoray calibrate` end to end, then annotate and evaluate with its file: real Ray, vLLM
(tiny model) and Delta tables. The tiny model's confidences say nothing about real quality; what
is tested is that the temperatures are fitted, applied, recorded and versioned."""

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from emoray import cli
from emoray.quality import calibration
from emoray.lake import table
from emoray.models import resolve_model
from emoray.tasks import TASKS
from tests.conftest import ENGINE_FLAGS

ENGINE = ENGINE_FLAGS
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, ray_local, tiny_model):
    out = tmp_path_factory.mktemp("calibration")
    code = cli.main(["calibrate", "--output", str(out), "--tasks", "v_oc,ei_oc,e_c,v_reg",
                     "--model", str(tiny_model), "--max-loss", "0.99", *ENGINE])
    assert code == 0
    return out / "calibration.json"


def test_calibrate_fits_a_temperature_per_class_task_of_the_dev_sample(fitted, tiny_model):
    data = json.loads(fitted.read_text())
    assert data["format"] == calibration.FORMAT
    assert data["model"] == resolve_model(str(tiny_model)).identity
    provenance = data["fitted"]
    assert provenance["file"] == "aaid_dev_sample.jsonl" and provenance["limit"] is None
    # the dev sample: v_oc 40 rows, ei_oc 50 joy + 11 fear, e_c 40
    assert {k: v["n"] for k, v in data["temperatures"].items()} == {
        "v_oc": 40, "ei_oc": 61, "e_c": 40}
    assert provenance["skipped"] == {}
    # v_reg (40 dev rows) is scored both ways in one run; the file keeps the better rule
    v_reg = provenance["scoring"]["v_reg"]
    assert v_reg["n"] == 40 and set(v_reg["pearson"]) == {"greedy", "expected"}
    assert all(-1 <= r <= 1 for r in v_reg["pearson"].values())
    assert data["expected_score"] == (["v_reg"] if v_reg["better"] == "expected" else [])
    assert v_reg["better"] == ("expected" if v_reg["pearson"]["expected"] >
                               v_reg["pearson"]["greedy"] else "greedy")
    for name, entry in data["temperatures"].items():
        assert entry["prompt_version"] == TASKS[name].prompt_version()
        assert entry["temperature"] > 0
        for when in ("before", "after"):
            figures = provenance["in_sample"][name][when]
            assert figures["n"] == entry["n"] and 0 <= figures["ece"] <= 1
            assert 0 <= figures["brier"] <= 1
    loaded = calibration.Calibration.from_json(fitted.read_text(), str(fitted))
    assert data["version"] == loaded.version
    # --max-loss 0.99: every fitted task gets a cascade threshold (its accepted dev answers are
    # right at least 1 % of the time: a fitted task has two or more right)
    assert set(data["thresholds"]) == set(data["temperatures"]) == set(loaded.thresholds)
    for name, t in data["thresholds"].items():
        assert t["max_loss"] == 0.99 and t["n"] == data["temperatures"][name]["n"]
        assert 0 <= t["threshold"] <= 1 and 0 < t["accepted_share"] <= 1
        assert t["accuracy"] >= 0.01


TEXTS = ["what a lovely day", "I hate waiting", "so scared of exams", "ok", "best news ever",
         "meh"]


def _annotate(tmp_path, prefix, tiny_model, *extra):
    """Annotate the six texts under doc ids `<prefix>0..5` into one table; returns the run's
    summary."""
    src = tmp_path / prefix
    src.mkdir()
    pq.write_table(pa.table({"id": [f"{prefix}{i}" for i in range(6)], "text": TEXTS}),
                   src / "part.parquet")
    code = cli.main(["annotate", "--input", str(src), "--output", str(tmp_path / "affect"),
                     "--tasks", "v_oc,ei_oc:joy,v_reg", "--model", str(tiny_model),
                     "--run-id", prefix, "--json", *extra, *ENGINE])
    assert code == 0
    return code


def test_annotate_applies_records_and_versions_the_calibration(fitted, tmp_path, tiny_model,
                                                                capsys):
    """A run without calibration, then the same texts under new doc ids with the calibration
    file, then with the file changed: the later runs reuse the stored answers (no prompt sent)
    and calibrate the stored model confidence with their own file."""
    data = json.loads(fitted.read_text())
    data["expected_score"] = []  # v_reg scored greedily here, so the later runs reuse it
    fitted = tmp_path / "fitted.json"
    fitted.write_text(json.dumps(data))
    changed = tmp_path / "changed.json"
    data["temperatures"]["v_oc"]["temperature"] *= 1.5
    changed.write_text(json.dumps(data))
    sent = {}
    for run, extra in (("raw", ()), ("calibrated", ("--calibration", str(fitted))),
                       ("changed", ("--calibration", str(changed)))):
        capsys.readouterr()
        _annotate(tmp_path, run, tiny_model, *extra)
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        sent[run] = (summary["prompts_sent"], summary["reused"], summary["rows_out"])
    assert sent == {"raw": (18, 0, 18), "calibrated": (0, 18, 18), "changed": (0, 18, 18)}
    tag = calibration.Calibration.from_json(fitted.read_text(), "f").tag
    changed_tag = calibration.Calibration.from_json(changed.read_text(), "c").tag
    assert changed_tag != tag
    rows = table.AnnotationTable(str(tmp_path / "affect")).read()
    assert rows.num_rows == 3 * 6 * 3
    by_run = {}
    for run in ("raw", "calibrated", "changed"):
        part = rows.filter(pc.equal(rows["run_id"], run))
        part = part.append_column("n", pc.utf8_slice_codeunits(part["doc_id"], len(run)))
        by_run[run] = part.sort_by([("task", "ascending"), ("n", "ascending")]).to_pydict()
    raw, cal = by_run["raw"], by_run["calibrated"]
    temperatures = {k: v["temperature"] for k, v in data["temperatures"].items()}
    temperatures["v_oc"] /= 1.5
    for i, task in enumerate(cal["task"]):
        assert raw["calibration"][i] == "uncalibrated" and raw["confidence"][i] is not None
        assert raw["raw_confidence"][i] == raw["confidence"][i]
        assert cal["raw_output"][i] == raw["raw_output"][i]  # calibration never changes answers
        assert cal["raw_confidence"][i] == by_run["changed"]["raw_confidence"][i] == \
            raw["confidence"][i]
        if task == "v_reg":  # regression: no temperature, marked so
            assert cal["calibration"][i] == "uncalibrated"
            assert cal["confidence"][i] == raw["confidence"][i]
            continue
        assert cal["calibration"][i] == tag
        assert 0 <= cal["confidence"][i] <= 1
        assert cal["confidence"][i] == pytest.approx(
            calibration.scale([raw["confidence"][i]], temperatures[task])[0])
        assert by_run["changed"]["calibration"][i] == changed_tag
    assert cal["confidence"] != raw["confidence"]
    assert by_run["changed"]["confidence"] != cal["confidence"]
    commits = {c.get("run_id"): c.get("calibration")
               for c in table.AnnotationTable(str(tmp_path / "affect")).history()}
    assert commits["raw"] == "uncalibrated"
    assert commits["calibrated"] == tag and commits["changed"] == changed_tag


def test_evaluate_reports_before_and_after_the_calibration(fitted, tmp_path, tiny_model,
                                                           capsys):
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--output", str(out), "--tasks", "v_oc,v_reg", "--limit", "30",
                     "--model", str(tiny_model), "--calibration", str(fitted),
                     "--expected-score", "v_reg", *ENGINE])
    assert code == 0
    printed = capsys.readouterr().out
    tag = calibration.Calibration.from_json(fitted.read_text(), "f").tag
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["calibration"] == tag
    v_oc = metrics["tasks"]["v_oc"]["confidence"]
    assert v_oc["calibration"] == tag and v_oc["before"]["n"] == v_oc["after"]["n"] == 30
    assert {"ece", "brier", "reliability"} <= set(v_oc["after"])
    assert v_oc["after"]["ece"] != v_oc["before"]["ece"]
    assert (f"v_oc           confidence ECE / Brier: before {v_oc['before']['ece']:.4f} / "
            f"{v_oc['before']['brier']:.4f}, after {v_oc['after']['ece']:.4f} / "
            f"{v_oc['after']['brier']:.4f}") in printed
    assert (out / "reliability.png").read_bytes().startswith(PNG)
    report = (out / "report.md").read_text()
    assert f"| v_oc | 30 | {v_oc['before']['ece']:.4f} | {v_oc['before']['brier']:.4f} | " \
           f"{v_oc['after']['ece']:.4f} | {v_oc['after']['brier']:.4f} |" in report
    # v_reg scored by its expected value: inside [0, 1], the greedy answer kept in raw_output,
    # the confidence the probability within 0.1 of the answer
    rows = table.AnnotationTable(str(out / "annotations")).read().to_pylist()
    v_reg = [r for r in rows if r["task"] == "v_reg"]
    assert len(v_reg) == 30 and {r["status"] for r in v_reg} == {"ok"}
    assert {r["prompt_version"] for r in v_reg} == {TASKS["v_reg"].prompt_version(expected=True)}
    assert TASKS["v_reg"].prompt_version(expected=True) != TASKS["v_reg"].prompt_version()
    assert all(0 <= r["score"] <= 1 and 0 <= r["confidence"] <= 1 for r in v_reg)
    assert any(r["score"] != float(r["raw_output"]) for r in v_reg)
    spread = metrics["tasks"]["v_reg"]["confidence"]
    assert spread["n"] == 30 and set(spread) == {"n", "confidence_error_spearman"}
