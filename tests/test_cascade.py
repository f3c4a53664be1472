"""A cascade, tiny T5 (the Transformers engine) then the tiny LLaMA (vLLM), on real Ray, the
real table and local Spark: every pair gets exactly one final answer, the escalated pairs are
exactly those under the threshold, the table names the deciding model and the cascade, a
re-run sends no prompt, and a new threshold re-decides from the stored answers."""

import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from emoray import cli
from emoray.lake import table
from emoray.quality.calibration import Calibration, save
from emoray.config import AnnotateConfig, CascadeStep, ConfigError
from tests.conftest import ENGINE_FLAGS

TEXTS = [f"cascade text {i}: {w}" for i, w in enumerate(
    ["great day", "awful news", "so so", "lovely", "grim", "fine", "meh", "superb", "bad",
     "okay", "joy", "sad"])]


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    from emoray.tools.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("t5") / "tiny-t5", arch="t5")


def calibration_for(model, path, thresholds=None):
    """A calibration file for `model` holding v_oc (temperature 1: confidences unchanged), as
    `emoray calibrate` writes it (with `thresholds`, as `--max-loss` does); v_reg, a
    regression task, has none."""
    from emoray.pipeline import resolve_scoring

    scoring = resolve_scoring(AnnotateConfig(tasks=["v_oc", "v_reg"],
                                             engine={"model": str(model), "device": "cpu"}))
    save(Calibration(scoring.model.identity, {"v_oc": {
        "prompt_version": scoring.versions["v_oc"], "temperature": 1.0, "n": 40}},
        thresholds=thresholds or {}), str(path), AnnotateConfig().s3)
    return path


def profile(path, t5, llama, calibration, threshold):
    path.write_text(json.dumps({"tasks": ["v_oc", "v_reg"], "cascade": [
        {"model": str(t5), "calibration": str(calibration), "accept": {"v_oc": threshold}},
        {"model": str(llama)}]}))
    return path


def annotate(conf, texts, out, run_id, *flags):
    """`emoray annotate` of the cascade profile `conf`: its exit code."""
    return cli.main(["annotate", "--config", str(conf), "--input", str(texts), "--output",
                     str(out), "--run-id", run_id, "--json", *ENGINE_FLAGS, *flags])


def run(capsys, conf, texts, out, run_id):
    assert annotate(conf, texts, out, run_id) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def rows_of(out, model):
    t = table.AnnotationTable(str(out)).read()
    return t.filter(pc.equal(t["model"], model))


def test_a_cascade_decides_each_pair_once_and_escalates_what_is_under_its_threshold(
        tmp_path, ray_local, tiny_model, tiny_t5, spark, capsys, monkeypatch, cold_engine):
    """Also its dry run and budget: the dry run counts the first step exactly and bounds the
    second (every pair escalated), starting no engine and writing nothing; a prompt-token cap
    under that worst case is refused; with --allow-partial a cap the first step leaves one
    token of stops the second step (exit 9) with the first step's decisions committed, and the
    next run decides exactly the pairs left."""
    from emoray.engines import pool as engine_pool
    from emoray.cascade import render_plan

    texts = tmp_path / "texts"
    texts.mkdir()
    pq.write_table(pa.table({"id": [f"d{i:02d}" for i in range(12)], "text": TEXTS}),
                   texts / "night.parquet")
    out, cal = tmp_path / "affect", calibration_for(tiny_t5, tmp_path / "t5-calibration.json")
    conf = profile(tmp_path / "a.json", tiny_t5, tiny_model, cal, 0.0)

    assert annotate(conf, texts, out, "night-0", "--dry-run") == 0
    plan = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not table.AnnotationTable(str(out)).exists()
    assert engine_pool._kept == {}  # no engine ran (a night's engines stay warm in the suite)
    head, (bound,) = plan["first_step"], plan["later_steps"]
    assert (plan["pairs"], plan["already_decided"], plan["rows_to_write"]) == (24, 0, 24)
    assert (head["rows_in"], head["pairs"], head["rows_to_write"], head["prompts"]) == (
        12, 24, 24, 24)
    assert (bound["pairs"], bound["already_held"], bound["prompts"]) == (24, 0, 24)
    assert head["prompt_tokens"] > 0 and bound["prompt_tokens"] > 0
    assert plan["prompts"] == 48
    assert plan["prompt_tokens"] == head["prompt_tokens"] + bound["prompt_tokens"]
    said = render_plan(plan).splitlines()
    assert said[0].startswith(f"dry run of cascade {plan['model']} over {texts} -> {out}: no "
                              "engine started, nothing written")
    assert f"  worst case       48 prompts, {plan['prompt_tokens']} prompt tokens" in said
    assert said[-1] == ("  (steps after the first are upper bounds: the run sends each only "
                        "the pairs the step before it escalates)")

    worst = (f"{plan['prompt_tokens']} prompt tokens estimated at worst (every undecided pair "
             "reaching every model) > budget.max_prompt_tokens")
    monkeypatch.setenv("EMORAY_BUDGET__MAX_PROMPT_TOKENS", str(plan["prompt_tokens"] - 1))
    assert annotate(conf, texts, out, "night-0") == cli.EXIT_BUDGET == 8
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"emoray: over budget, nothing started: {worst} {plan['prompt_tokens'] - 1} (48 "
        "prompts for 24 rows); raise the budget, annotate a smaller input, or pass "
        "--allow-partial to answer what the budget pays for")
    assert not table.AnnotationTable(str(out)).exists()

    cap = head["prompt_tokens"] + 1  # the T5 answers all; the LLaMA gets one token's worth
    monkeypatch.setenv("EMORAY_BUDGET__MAX_PROMPT_TOKENS", str(cap))
    assert annotate(conf, texts, out, "night-0", "--allow-partial", "--batch-size",
                    "2") == cli.EXIT_BUDGET_SPENT == 9
    err = capsys.readouterr().err.strip().splitlines()
    assert f"emoray: {worst} {cap} (48 prompts for 24 rows); --allow-partial: the run stops " \
           "at the budget" in err
    stopped = next(r for r in table.run_reports(table.AnnotationTable(str(out)))
                   if r["run_id"] == "night-0")
    ident, llama_id = stopped["model"], stopped["cascade"][1]["model"]
    answered = rows_of(out, llama_id).num_rows  # the batches admitted before the cap
    assert 0 < answered < 12 and stopped["missing_pairs"] == 12 - answered
    assert err[-1] == (
        f"emoray: budget spent ({stopped['prompt_tokens']} prompt tokens spent >= "
        f"budget.max_prompt_tokens {cap}) at step 2 of cascade {ident} ({llama_id}): run "
        f"night-0 committed {12 + answered} rows and left {12 - answered} pairs undecided; "
        "the next run of this cascade continues with them (raise the budget to finish sooner)")
    assert (stopped["status"], stopped["rows_out"]) == ("budget_spent", 12 + answered)
    assert [s["prompt_tokens"] for s in stopped["steps"]][0] == head["prompt_tokens"]
    assert [s["prompts_sent"] for s in stopped["steps"]] == [24, answered]
    # threshold 0: the T5 decides every v_oc pair; v_reg (no temperature) always goes on
    assert stopped["escalation"] == {"v_oc": {"pairs": 12, "escalated": 0, "share": 0.0},
                                     "v_reg": {"pairs": 12, "escalated": 12, "share": 1.0}}
    monkeypatch.delenv("EMORAY_BUDGET__MAX_PROMPT_TOKENS")

    first = run(capsys, conf, texts, out, "night-1")
    assert first["model"] == ident and first["pairs"] == 24
    assert (first["already_held"], first["rows_out"]) == (12 + answered, 12 - answered)
    t5_id = first["cascade"][0]["model"]
    assert first["decided_by"] == {t5_id: 0, llama_id: 12 - answered}
    assert [s["prompts_sent"] for s in first["steps"]] == [0, 12 - answered]
    final = rows_of(out, ident)
    assert final.num_rows == 24
    assert len({(d, t) for d, t in zip(final["doc_id"].to_pylist(),
                                       final["task"].to_pylist())}) == 24
    assert sorted(zip(final["task"].to_pylist(), final["decided_by"].to_pylist())) == sorted(
        [("v_oc", t5_id)] * 12 + [("v_reg", llama_id)] * 12)
    assert rows_of(out, llama_id).num_rows == 12  # only the escalated pairs reached it
    assert not (out / "_cascade").exists() or not any((out / "_cascade").iterdir())

    again = run(capsys, profile(tmp_path / "a.json", tiny_t5, tiny_model, cal, 0.0), texts,
                out, "night-2")
    assert (again["model"], again["rows_out"], again["prompts_sent"], again["already_held"]) \
        == (ident, 0, 0, 24)

    # a threshold at the T5's median v_oc confidence: another cascade, decided from what is
    # stored; the LLaMA answers only the v_oc pairs under it (it holds every v_reg pair)
    t5_rows = rows_of(out, t5_id).filter(pc.equal(rows_of(out, t5_id)["task"], "v_oc"))
    confidences = sorted(t5_rows["confidence"].to_pylist())
    threshold = confidences[6]
    under = sum(c < threshold for c in confidences)
    assert 0 < under < 12
    second = run(capsys, profile(tmp_path / "b.json", tiny_t5, tiny_model, cal, threshold),
                 texts, out, "night-3")
    assert second["model"] != ident and second["rows_out"] == 24
    assert second["escalation"]["v_oc"] == {"pairs": 12, "escalated": under,
                                            "share": round(under / 12, 4)}
    assert [s["prompts_sent"] for s in second["steps"]] == [0, under]
    assert second["decided_by"] == {t5_id: 12 - under, llama_id: 12 + under}
    decided = rows_of(out, second["model"])
    by_t5 = decided.filter(pc.equal(decided["decided_by"], t5_id))
    assert min(by_t5["confidence"].to_pylist()) >= threshold
    assert cli.main(["runs", "--output", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    at = next(i for i, line in enumerate(listing) if line.startswith("night-3  ok  "))
    assert listing[at + 1] == (f"    escalated: v_oc {under}/12 ({under / 12:.1%}), v_reg 12/12 "
                               "(100.0%)")

    from emoray.enrich.spark_join import EnrichConfig, enrich

    down = tmp_path / "down"
    down.mkdir()
    pq.write_table(pa.table({"id": [f"d{i:02d}" for i in range(12)]}), down / "p.parquet")
    summary = enrich(spark, EnrichConfig(annotations=str(out), downstream=str(down),
                                         output=str(tmp_path / "enriched"),
                                         model=second["model"]))
    assert summary["output_rows"] == 12
    assert summary["filled"]["affect_valence"] == summary["filled"]["affect_valence_class"] == 12


def test_a_model_without_a_calibration_for_a_task_cannot_accept_it(tiny_model, tiny_t5,
                                                                    tmp_path):
    from emoray.cascade import prepare

    cal = calibration_for(tiny_t5, tmp_path / "cal.json")
    config = AnnotateConfig(tasks=["v_oc", "v_reg"], engine={"device": "cpu"}, cascade=[
        CascadeStep(model=str(tiny_t5), calibration=str(cal), accept={"v_reg": 0.5}),
        CascadeStep(model=str(tiny_model))])
    with pytest.raises(ConfigError, match=r"cascade model .*tiny-t5 has no calibration for "
                       r"task v_reg \(under prompt version \w+\), so it cannot accept for it"):
        prepare(config)
    from_file = config.model_copy(update={"cascade": [config.cascade[0].model_copy(
        update={"accept": "calibration"}), config.cascade[1]]})
    with pytest.raises(ConfigError, match=r"takes its thresholds from its calibration, which "
                       r"holds none for the run's tasks: fit them with `emoray calibrate "
                       r"--max-loss X`"):
        prepare(from_file)
    data = json.loads(cal.read_text())
    data["thresholds"] = {"v_oc": {"threshold": 0.42, "max_loss": 0.1, "n": 40,
                                   "accepted_share": 0.5, "accuracy": 0.9}}
    cal.write_text(json.dumps(data))
    steps, ident = prepare(from_file)
    assert steps[0].accept == {"v_oc": 0.42} and steps[1].accept == {}
    assert ident != prepare(from_file.model_copy(update={"cascade": [
        config.cascade[0].model_copy(update={"accept": {"v_oc": 0.43}}),
        config.cascade[1]]}))[1]
    last = config.model_copy(update={"cascade": [config.cascade[1].model_copy(
        update={"accept": {"v_oc": 0.5}}), config.cascade[0]]})
    with pytest.raises(ConfigError, match="the cascade's last model answers whatever reaches"):
        prepare(last)


def test_a_cascade_refuses_the_quality_gate_and_says_to_gate_each_model(tmp_path, tiny_model,
                                                                        tiny_t5, capsys):
    cal = calibration_for(tiny_t5, tmp_path / "cal.json")
    conf = profile(tmp_path / "a.json", tiny_t5, tiny_model, cal, 0.5)
    assert annotate(conf, tmp_path / "texts", tmp_path / "affect", "g", "--gate") == 2
    assert capsys.readouterr().err.strip() == (
        "emoray: the quality gate does not run over a cascade: gate each of its models alone "
        "(emoray annotate --model M --gate), then run the cascade with gate.enabled false "
        "(--no-gate)")


def test_a_decision_holds_only_for_the_text_it_was_made_on(tmp_path):
    """The cascade's held check (`cascade.latest`) matches the text hash too: a doc whose text
    changed is a new question, as it is for one model's held check."""
    from datetime import datetime, timezone

    import pyarrow.dataset as pads

    from emoray.cascade import latest

    tbl = table.AnnotationTable(str(tmp_path / "affect"))
    writer = table.ChunkWriter(tbl, "night-1", 100)
    writer.write(pa.Table.from_pylist([
        {"doc_id": d, "text_sha256": sha, "task": "v_oc", "score": 1.0, "status": "ok",
         "model": "cascade-abc", "prompt_version": "p", "run_id": "night-1",
         "annotated_at": datetime.now(timezone.utc), "decided_by": "small"}
        for d, sha in (("d1", "aaa"), ("d2", "bbb"))], schema=table.SCHEMA))
    writer.flush()
    tonight = {"d1": {"text_sha256": "aaa"}, "d2": {"text_sha256": "changed"},
               "d3": {"text_sha256": "ccc"}}
    held = latest(tbl, pads.field("model") == "cascade-abc", tonight)
    assert list(held) == [("d1", "v_oc", None)] and held["d1", "v_oc", None]["decided_by"] == "small"


def test_evaluate_a_cascade_beside_each_model_alone(tmp_path, ray_local, tiny_model, tiny_t5,
                                                     capsys):
    """`emoray evaluate --cascade`: each model answers the gold rows alone, then the cascade
    decides from those answers (no prompt of its own); its escalation, who decided and its cost
    per 1 M rows (each model's answering rate times the share reaching it) add up."""
    cal = calibration_for(tiny_t5, tmp_path / "cal.json", thresholds={"v_oc": {
        "threshold": 0.999, "max_loss": 0.1, "n": 40, "accepted_share": 0.5, "accuracy": 0.9}})
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--output", str(out), "--tasks", "v_oc", "--limit", "8",
                     "--cascade", f"{tiny_t5}@{cal},{tiny_model}", "--json",
                     *ENGINE_FLAGS]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    t5_id, llama_id = result["models"]
    assert result["prompts_sent"] == 0 and result["escalation"]["v_oc"]["pairs"] == 8
    escalated = result["escalation"]["v_oc"]["escalated"]
    assert escalated == 8  # the tiny T5's confidence among 7 classes never reaches 0.999
    assert result["decided_by"] == {t5_id: 8 - escalated, llama_id: escalated}
    assert result["reached_share"] == {t5_id: 1.0, llama_id: round(escalated / 8, 4)}
    assert set(result["tasks"]["v_oc"]) == set(result["alone"][t5_id]["tasks"]["v_oc"]) \
        == set(result["alone"][llama_id]["tasks"]["v_oc"])
    hours = {m: a["device_hours_per_1m_rows"] for m, a in result["alone"].items()}
    assert result["device_hours_per_1m_rows"] == pytest.approx(
        hours[t5_id] + escalated / 8 * hours[llama_id], abs=1e-3)
    assert json.loads((out / "cascade.json").read_text())["cascade"] == result["cascade"]
