"""Calibration table in, table out: fitting on arrays with known miscalibration, the
calibration file and its version, and which rows the parse stage calibrates."""

import json

import numpy as np
import pyarrow as pa
import pytest

from emoray import stages
from emoray.quality.calibration import (
    UNCALIBRATED,
    Calibration,
    CalibrationError,
    apply_temperature,
    brier,
    ece,
    fit_scale,
    fit_temperature,
    load,
    lowest_threshold,
    save,
    scale,
)
from emoray.config import S3Config
from emoray.models import ModelSpec


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_temperature_is_recovered_and_lowers_ece_and_brier(true_t):
    """Labels drawn from softmax(z); the 'model' reports softmax(z / T): over-confident for
    T < 1, under-confident for T > 1. Fitting must find T and undo it."""
    rng = np.random.default_rng(7)
    z = rng.normal(0, 2.0, size=(20_000, 4))
    labels = np.array([rng.choice(4, p=p) for p in _softmax(z)])
    reported = _softmax(z / true_t)
    fitted = fit_temperature(reported, labels)
    assert fitted == pytest.approx(1 / true_t, rel=0.05)
    calibrated = apply_temperature(reported, fitted)
    assert np.allclose(calibrated.sum(axis=1), 1.0)
    picked = reported.argmax(axis=1)
    assert (calibrated.argmax(axis=1) == picked).all()  # calibration never changes the answer
    correct = picked == labels
    before = ece(reported.max(axis=1), correct)
    after = ece(calibrated.max(axis=1), correct)
    assert after < before / 3 and after < 0.02
    assert brier(calibrated, labels) < brier(reported, labels)


def test_ece_of_known_bins():
    # two bins: confidence 0.95 right half the time, 0.25 right a quarter of the time
    confidence = np.array([0.95] * 4 + [0.25] * 4)
    correct = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    assert ece(confidence, correct) == pytest.approx(0.5 * 0.45 + 0.5 * 0.0)
    assert ece(np.array([]), np.array([])) == 0.0
    assert brier(np.array([[1.0, 0.0], [0.5, 0.5]]), np.array([0, 1])) == pytest.approx(0.25)


def test_the_chosen_answers_temperature_is_recovered_and_lowers_ece():
    """An answer is right with probability q; the model reports scale(q, 0.5) (over-confident).
    Fitting on (reported, right) finds T = 2, which maps the reports back onto q."""
    rng = np.random.default_rng(11)
    q = rng.uniform(0.05, 0.95, 20_000)
    right = rng.random(q.size) < q
    reported = scale(q, 0.5)
    t = fit_scale(reported, right)
    assert t == pytest.approx(2.0, rel=0.05)
    assert np.allclose(scale(reported, t), q, atol=0.02)
    assert ece(scale(reported, t), right) < ece(reported, right) / 3
    assert fit_scale(reported[:5], right[:5]) is None  # too few answers
    assert fit_scale(reported[:100], np.ones(100, bool)) is None  # all right: no temperature


PV = "pv-1"


def _answered(confidences, task="v_oc", version=PV):
    n = len(confidences)
    return pa.table({
        "doc_ids": pa.array([[f"d{i}"] for i in range(n)], pa.list_(pa.string())),
        "text_sha256": [f"h{i}" for i in range(n)], "task": [task] * n,
        "target": pa.nulls(n, pa.string()), "prompt_version": [version] * n,
        "raw_output": ["1"] * n, "confidence": pa.array(confidences, pa.float64()),
        "expected_score": pa.nulls(n, pa.float64()), "truncated": [False] * n, "error": pa.nulls(n, pa.string()),
        "finish_reason": ["stop"] * n, "text_status": ["ok"] * n})


def test_parse_calibrates_the_models_own_confidence_and_keeps_it():
    fitted = Calibration("m@abc", {"v_oc": {"prompt_version": PV, "temperature": 2.0, "n": 40}})
    out = stages.parse(_answered([0.9, 0.6, None]), "m@abc", "r", fitted).to_pydict()
    assert out["raw_confidence"] == [0.9, 0.6, None]
    assert out["calibration"] == [fitted.tag, fitted.tag, None]
    # sqrt(.9) / (sqrt(.9) + sqrt(.1)) = 0.75
    assert out["confidence"] == [pytest.approx(0.75), pytest.approx(0.5505, abs=1e-4), None]
    plain = stages.parse(_answered([0.9, None]), "m@abc", "r").to_pydict()
    assert plain["confidence"] == plain["raw_confidence"] == [0.9, None]
    assert plain["calibration"] == [UNCALIBRATED, None]
    for other in (_answered([0.9], task="ei_oc"), _answered([0.9], version="pv-2")):
        row = stages.parse(other, "m@abc", "r", fitted).to_pylist()[0]
        assert (row["confidence"], row["calibration"]) == (0.9, UNCALIBRATED)


def test_a_reused_answer_carries_the_models_own_confidence():
    """The plan hands the engine stage the stored raw confidence. A class answer stored before
    raw_confidence existed carries its confidence, which was then the model's own; a
    regression answer's meant something else then (its tokens' probability), so none."""
    from datetime import datetime, timezone

    from emoray.tasks import resolve

    requests = resolve(["v_oc", "v_reg"])
    versions = {r.task.name: r.task.prompt_version() for r in requests}
    new = stages.normalize(pa.table({"id": ["a", "b"], "text": ["one", "two"]}), "id", "text")
    sha = new["text_sha256"].to_pylist()
    stored = stages.as_plan_input(pa.table({
        "doc_id": ["old1", "old2", "old3", "old4"], "text_sha256": sha + sha,
        "task": ["v_oc", "v_oc", "v_reg", "v_reg"],
        "prompt_version": [versions["v_oc"]] * 2 + [versions["v_reg"]] * 2,
        "raw_output": ["1", "2", "0.500", "0.250"], "confidence": [0.7, 0.4, 0.3, 0.2],
        "raw_confidence": pa.array([0.6, None, 0.35, None], pa.float64()),
        "status": ["ok"] * 4,
        "annotated_at": pa.array([datetime.now(timezone.utc)] * 4,
                                 pa.timestamp("us", tz="UTC"))}), "old")
    planned = stages.plan(pa.concat_tables([new, stored]), requests, versions)
    got = dict(zip(planned["cached_output"].to_pylist(),
                   planned["cached_confidence"].to_pylist()))
    assert got == {"1": 0.6, "2": 0.4, "0.500": 0.35, "0.250": None}


def test_calibration_file_round_trip_version_and_refusals(tmp_path):
    fitted = Calibration("tiny@abc123", {"v_oc": {"prompt_version": PV, "temperature": 1.5,
                                                   "n": 40}}, {"data": "dev"})
    path = str(tmp_path / "calibration.json")
    save(fitted, path, S3Config())
    model = ModelSpec("renamed", "/x", "LlamaForCausalLM", digest="abc123")
    loaded = load(path, S3Config(), model)
    assert loaded == fitted and loaded.tag == f"temperature@{fitted.version}"
    assert json.loads((tmp_path / "calibration.json").read_text())["version"] == fitted.version
    hotter = Calibration(fitted.model, {"v_oc": {**fitted.temperatures["v_oc"],
                                                 "temperature": 1.6}}, fitted.fitted)
    assert hotter.version != fitted.version
    assert Calibration(fitted.model, fitted.temperatures, {"data": "x"}).version == \
        fitted.version
    other = ModelSpec("tiny", "/y", "LlamaForCausalLM", digest="fff000")
    with pytest.raises(CalibrationError, match=r"fitted for model tiny@abc123, not "
                       r"tiny@fff000: fit one for this model with `emoray calibrate`"):
        load(path, S3Config(), other)
    (tmp_path / "bad.json").write_text('{"format": "emoray-calibration/1", "model": "m", '
                                       '"temperatures": {"v_oc": {"temperature": -1}}}')
    with pytest.raises(CalibrationError, match=r"bad.json is not one `emoray calibrate` writes "
                       r"\(task v_oc: needs prompt_version and a temperature > 0\)"):
        load(str(tmp_path / "bad.json"), S3Config(), model)
    with pytest.raises(CalibrationError, match=r"missing.json cannot be read"):
        load(str(tmp_path / "missing.json"), S3Config(), model)


def test_lowest_threshold_keeps_the_accepted_answers_right_often_enough():
    """Sorted by confidence, right/wrong: 0.9 R, 0.8 R, 0.7 W, 0.6 R, 0.5 W, 0.4 W (ties at 0.6
    taken together). At max loss 0.25 the lowest threshold whose accepted answers are >= 75 %
    right is 0.6 (3 of 4); at 0.1 it is 0.8 (2 of 2); at 0.6, everything (3 of 6 = 50 %);
    nothing is ever right: none."""
    conf = [0.5, 0.9, 0.6, 0.4, 0.8, 0.7]
    right = [False, True, True, False, True, False]
    found = lowest_threshold(conf, right, 0.25)
    assert found == {"threshold": 0.6, "max_loss": 0.25, "n": 6, "accepted_share": 0.6667,
                     "accuracy": 0.75}
    assert lowest_threshold(conf, right, 0.1)["threshold"] == 0.8
    assert lowest_threshold(conf, right, 0.6)["threshold"] == 0.4
    assert lowest_threshold(conf, [False] * 6, 0.5) is None
    ties = lowest_threshold([0.9, 0.9, 0.5], [True, False, True], 0.4)
    assert ties["threshold"] == 0.5  # 0.9 alone is 1 of 2 right: the tie is taken whole
