"""Fitting calibration on arrays with known miscalibration (table in, numbers out)."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from emoray.calibration import apply_temperature, brier, ece, fit_temperature, fit_thresholds


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


def test_multi_label_thresholds_improve_f1():
    """Scores of two labels whose best cut is not 0.5: a low-scoring rare label (true above
    ~0.3) and a high-scoring common one (true above ~0.7)."""
    rng = np.random.default_rng(3)
    n = 5_000
    truth = np.column_stack([rng.random(n) < 0.2, rng.random(n) < 0.6])
    scores = np.column_stack([
        np.where(truth[:, 0], rng.uniform(0.3, 0.6, n), rng.uniform(0.0, 0.35, n)),
        np.where(truth[:, 1], rng.uniform(0.7, 1.0, n), rng.uniform(0.3, 0.75, n))])
    thresholds = fit_thresholds(scores, truth)
    assert 0.28 <= thresholds[0] <= 0.36 and 0.68 <= thresholds[1] <= 0.76
    at_half = f1_score(truth, scores >= 0.5, average="micro")
    fitted = f1_score(truth, scores >= thresholds, average="micro")
    assert fitted > at_half + 0.1
    assert (fit_thresholds(scores, np.zeros_like(truth)) == 0.5).all()
