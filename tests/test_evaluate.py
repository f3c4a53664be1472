"""`emoray evaluate` end to end on AEB files in S3, the quality gate, and the per-run label
report: real Ray, vLLM (tiny model) and S3 on 127.0.0.1."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emoray import cli
from emoray.lake import locations, table
from emoray.config import S3Config
from tests.conftest import REPO, ENGINE_FLAGS

ENGINE = ENGINE_FLAGS
PNG = b"\x89PNG\r\n\x1a\n"


def upload(local_dir, uri, names):
    fs, root = locations.filesystem_for(uri, S3Config())
    fs.create_dir(root, recursive=True)
    for name in names:
        with fs.open_output_stream(f"{root}/{name}") as f:
            f.write((local_dir / name).read_bytes())


def test_evaluate_limit_20_from_s3_writes_three_outputs(tmp_path, ray_local, tiny_model,
                                                        aeb_dir, capsys):
    upload(aeb_dir, "s3://emoray-test/aeb/",
           ["SST_test.csv", "sst5_test.csv", "aaid_test_sample.jsonl", "aaid_dev_sample.jsonl"])
    previous = tmp_path / "previous.json"
    previous.write_text(json.dumps({"run_id": "old", "model": "x", "created_at": "then",
                                    "tasks": {"sst": {"metrics": {"pearson": 0.25}}}}))
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--data", "s3://emoray-test/aeb/", "--output", str(out),
                     "--tasks", "sst,sst5,e_c,ei_reg", "--limit", "20", "--seed", "1",
                     "--model", str(tiny_model), "--previous", str(previous), *ENGINE])
    assert code == 0, capsys.readouterr().err[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    tasks = metrics["tasks"]
    assert list(tasks) == ["ei_reg", "ei_reg:anger", "ei_reg:joy", "e_c", "sst", "sst5"]
    assert {k: v["n"] for k, v in tasks.items()} == {
        "ei_reg": 20, "ei_reg:anger": 9, "ei_reg:joy": 11, "e_c": 20, "sst": 20, "sst5": 20}
    assert metrics["summary"] == {"n": 80, "parse_rate": 1.0}
    assert all(v["parse_rate"] == 1.0 and v["scored"] == v["n"] for v in tasks.values())
    assert set(tasks["sst5"]["metrics"]) == {"accuracy", "macro_f1"}
    assert set(tasks["e_c"]["metrics"]) == {"jaccard", "micro_f1", "macro_f1"}
    assert tasks["ei_reg"]["averaged_over"] == ["anger", "joy"]
    assert tasks["ei_reg"]["metrics"]["pearson"] == round(
        (tasks["ei_reg:anger"]["metrics"]["pearson"] + tasks["ei_reg:joy"]["metrics"]["pearson"])
        / 2, 4)
    assert all(-1 <= x <= 1 for v in tasks.values() for x in v["metrics"].values())
    assert metrics["references"][0]["name"] == "SemEval-2018 baseline"
    assert metrics["title_note"].startswith("tiny random-weight TEST model")
    report = (out / "report.md").read_text()
    assert "| sst | 20 | 100.00% | ok 20 | pearson |" in report
    assert "| SemEval-2018 baseline | previous |" in report.replace("majority | ", "")
    assert (out / "chart.png").read_bytes().startswith(PNG)
    # class tasks report how well their confidence says they are right; no calibration given
    for key in ("sst5", "e_c"):
        cal = tasks[key]["confidence"]
        before = cal["before"]
        assert before["n"] == 20 and 0 <= before["ece"] <= 1 and 0 <= before["brier"] <= 1
        assert sum(p["n"] for p in before["reliability"]) == 20
        assert cal["after"] is None and cal["calibration"] is None
    for key in ("sst", "ei_reg:joy"):  # regression: confidence against absolute error
        assert set(tasks[key]["confidence"]) == {"n", "confidence_error_spearman"}
    assert (out / "reliability.png").read_bytes().startswith(PNG)
    assert (f"| sst5 | 20 | {tasks['sst5']['confidence']['before']['ece']:.4f} | "
            f"{tasks['sst5']['confidence']['before']['brier']:.4f} | - | - |") in report
    assert "after: no calibration given (fit one with `emoray calibrate`)" in \
        capsys.readouterr().out
    # the evaluation went through the annotate pipeline: its table holds one row per gold row
    rows = table.AnnotationTable(str(out / "annotations")).read()
    assert rows.num_rows == 80
    assert pq.read_table(out / "gold" / "gold.parquet").column_names == ["id", "text", "request"]


def run_annotate(tmp_path, tiny_model, profile_gate, run_id):
    src = tmp_path / "lake"
    src.mkdir(exist_ok=True)
    pq.write_table(__import__("pyarrow").table({
        "id": [f"d{i}" for i in range(6)],
        "text": ["what a lovely day", "I hate waiting", "so scared of exams", "", "ok",
                 "best news ever"]}), src / "part.parquet")
    profile = tmp_path / f"{run_id}.yaml"
    profile.write_text(json.dumps({"gate": profile_gate}))
    return cli.main(["annotate", "--config", str(profile), "--input", str(src), "--output",
                     str(tmp_path / "table"), "--tasks", "v_reg,e_c", "--model", str(tiny_model),
                     "--run-id", run_id, *ENGINE])


def test_gate_runs_after_the_lease_so_a_refused_run_spends_no_canary(tmp_path, ray_local,
                                                                     tiny_model, capsys):
    from emoray.lake.lock import TableLock

    (tmp_path / "table").mkdir()
    with TableLock(str(tmp_path / "table"), S3Config(), "night-holder", ttl_s=900):
        code = run_annotate(tmp_path, tiny_model, {"enabled": True}, "night-refused")
    assert code == cli.EXIT_LOCKED
    assert "night-holder" in capsys.readouterr().err
    assert not (tmp_path / "table" / "_gate").exists()  # no canary evaluated

    from emoray.config import AnnotateConfig, ConfigError, EngineConfig, GateConfig
    from emoray.pipeline import build_annotator

    job = build_annotator(AnnotateConfig(
        input=str(tmp_path / "lake"), output=str(tmp_path / "table"), gate=GateConfig(
            enabled=True), engine=EngineConfig(model=str(tiny_model), device="cpu")))
    with pytest.raises(ConfigError, match="gate.enabled is set but this job passed no gate"):
        job.run()  # the gate is the job's step: a job that forgets it is refused


def test_gate_blocks_below_threshold_and_passes_above(tmp_path, ray_local, tiny_model, cold_engine,
                                                     capsys):
    blocked = run_annotate(tmp_path, tiny_model, {
        "enabled": True, "thresholds": {"e_c": {"jaccard": 0.99}, "v_reg": {"pearson": -1.0}}},
        "night-blocked")
    err = capsys.readouterr().err
    assert blocked == cli.EXIT_GATE
    assert "quality gate failed, the lake was not annotated" in err
    assert "e_c jaccard 0." in err and "< 0.99 (canary n=10)" in err
    assert "v_reg pearson" not in err
    annotations = table.AnnotationTable(str(tmp_path / "table"))
    assert annotations.read().num_rows == 0
    verdict = json.loads((tmp_path / "table" / "_gate" / "night-blocked" / "gate.json").read_text())
    assert verdict["passed"] is False and verdict["canary_rows"] == 20
    gate_metrics = json.loads(
        (tmp_path / "table" / "_gate" / "night-blocked" / "metrics.json").read_text())
    reached = gate_metrics["tasks"]["e_c"]["metrics"]["jaccard"]

    passed = run_annotate(tmp_path, tiny_model, {
        "enabled": True, "thresholds": {"e_c": {"jaccard": reached - 0.01}}}, "night-ok")
    assert passed == cli.EXIT_OK, capsys.readouterr().err[-2000:]
    assert annotations.read().num_rows == 6 * 2
    report = json.loads((tmp_path / "table" / "_reports" / "night-ok.json").read_text())
    assert report["gate"]["passed"] is True and report["gate"]["failures"] == []
    # the first canary loaded the model; the second canary and the night ran on its warm engine
    # (engines.pool.keep_warm: a gated night keeps it from canary to night, the suite from night
    # to night, as a driver running several nights in one block does)
    starts = [r["engine_starts"] for night in ("night-blocked", "night-ok")
              for r in table.run_reports(table.AnnotationTable(
                  str(tmp_path / "table" / "_gate" / night / "annotations")))]
    assert starts + [report["engine_starts"]] == [1, 0, 0]
    assert report["engine_actors"][0]["load_s"] == 0

    # the per-run label report sits next to the run report and counts every row
    labels = json.loads(
        (tmp_path / "table" / "_reports" / "labels" / "night-ok.json").read_text())
    assert list(labels["tasks"]) == ["v_reg", "e_c"]
    v_reg = labels["tasks"]["v_reg"]
    assert v_reg["rows"] == 6 and v_reg["status_counts"] == {"ok": 5, "empty_text": 1}
    assert sum(v_reg["histogram"].values()) == 5 and len(v_reg["histogram"]) == 10
    assert 0 <= v_reg["mean"] <= 1
    assert v_reg["confidence"]["rows"] == 5 and 0 <= v_reg["confidence"]["mean"] <= 1
    assert v_reg["confidence"]["calibration"] == {"uncalibrated": 5}
    e_c = labels["tasks"]["e_c"]
    assert sum(e_c["labels"].values()) >= 5 and "neutral" in e_c["labels"]
    assert (tmp_path / "table" / "_reports" / "labels" / "night-ok.png").read_bytes().startswith(PNG)
    assert "## v_reg" in (tmp_path / "table" / "_reports" / "labels" / "night-ok.md").read_text()
    # `emoray runs` lists runs only, not label reports
    capsys.readouterr()
    assert cli.main(["runs", "--output", str(tmp_path / "table"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in listed] == ["night-ok"]


def test_evaluate_names_missing_settings(capsys):
    assert cli.main(["evaluate", "--data", "x"]) == cli.EXIT_CONFIG
    assert "missing required setting(s): evaluate.output" in capsys.readouterr().err


def test_the_aeb_ships_with_emoray_and_is_the_default():
    from emoray.quality import aeb

    assert Path(aeb.shipped()) == REPO / "emoray" / "data" / "aeb"
    gold = aeb.extract(None, S3Config(), ["v_reg", "sst"])
    assert gold.group_by("request").aggregate([([], "count_all")]).sort_by("request").to_pylist() \
        == [{"request": "sst", "count_all": 2210}, {"request": "v_reg", "count_all": 74}]
    assert (REPO / "emoray" / "data" / "aeb" / "LICENSE.EmoLLMs").is_file()
