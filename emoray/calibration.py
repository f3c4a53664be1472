"""Confidence that means what it says, the fitting half: temperature scaling of a class task's
candidate probabilities, per-label thresholds for multi-label answers, and the two measures
that say how far a confidence is from the truth: expected calibration error (ECE, 15
equal-width bins) and the Brier score.

Temperature scaling (Guo et al. 2017) is scikit-learn's (`CalibratedClassifierCV`,
`method="temperature"`, fitted on answers the model already gave through a pass-through
estimator); the per-label precision/recall curve is scikit-learn's. ECE and Brier's score are
written here (scikit-learn has only the binned curve, and a Brier loss that scores only the
positive class of a two-class task).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.metrics import precision_recall_curve

ECE_BINS = 15


class _GivenProbabilities(ClassifierMixin, BaseEstimator):
    """A classifier whose `predict_proba(X)` is X: the class probabilities the model gave."""

    def fit(self, X, y):
        self.classes_ = np.arange(np.asarray(X).shape[1])
        return self

    def predict_proba(self, X):
        return np.asarray(X, dtype=float)

    def predict(self, X):
        return np.asarray(X).argmax(axis=1)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T for which softmax(log(probs) / T) best fits `labels` (the index of the
    right class per row) in log-likelihood; T > 1 softens an over-confident model."""
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels)
    given = FrozenEstimator(_GivenProbabilities().fit(probs, labels))
    calibrated = CalibratedClassifierCV(given, method="temperature", ensemble=False).fit(
        probs, labels)
    return float(1.0 / calibrated.calibrated_classifiers_[0].calibrators[0].beta_)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T), row by row."""
    logits = np.log(np.clip(np.asarray(probs, dtype=float), 1e-12, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
                ) -> list[dict]:
    """The reliability diagram's points: per non-empty equal-width confidence bin, its rows,
    mean confidence and accuracy."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return [{"bin": b, "n": int((which == b).sum()),
             "confidence": float(confidence[which == b].mean()),
             "accuracy": float(correct[which == b].mean())}
            for b in range(bins) if (which == b).any()]


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the mean |accuracy - confidence| over equal-width confidence
    bins, weighted by the share of rows in each bin."""
    points = reliability(confidence, correct, bins)
    n = sum(p["n"] for p in points)
    return float(sum(p["n"] * abs(p["accuracy"] - p["confidence"]) for p in points) / n
                 ) if n else 0.0


def report(confidence: list[float | None], correct: list[bool]) -> dict:
    """How well the confidences of one class task's answers say they are right: ECE, Brier's
    score of the confidence as the probability of being right, and the reliability points."""
    kept = [(c, ok) for c, ok in zip(confidence, correct) if c is not None]
    conf = np.array([c for c, _ in kept], dtype=float)
    right = np.array([ok for _, ok in kept], dtype=float)
    return {"n": len(kept), "ece": round(ece(conf, right), 4),
            "brier": round(float(((conf - right) ** 2).mean()), 4) if kept else 0.0,
            "reliability": reliability(conf, right)}


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier's score: the mean over rows of the squared distance between the class
    probabilities and the one-hot truth, summed over classes (0 perfect, 2 worst). Written
    here because scikit-learn's `brier_score_loss` scores only the positive class of a
    two-class task, which would halve it for the binary tasks."""
    probs = np.asarray(probs, dtype=float)
    onehot = np.eye(probs.shape[1])[np.asarray(labels)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def fit_thresholds(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per label, the score threshold with the best F1 on (`scores`, `truth`), both of shape
    (rows, labels); 0.5 for a label that never occurs."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    out = np.full(scores.shape[1], 0.5)
    for j in range(scores.shape[1]):
        if not truth[:, j].any():
            continue
        precision, recall, thresholds = precision_recall_curve(truth[:, j], scores[:, j])
        f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
        out[j] = thresholds[int(np.argmax(f1[:-1]))]
    return out
