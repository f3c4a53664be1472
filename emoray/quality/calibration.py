"""Confidence that means what it says: temperature scaling fitted per task, the calibration
file that carries the temperatures from `emoray calibrate` to `annotate`, a cascade step's
acceptance threshold (`lowest_threshold`), and the two measures that say how far a confidence is from the truth:
expected calibration error (ECE, 15 equal-width bins) and the Brier score.

What annotate scales is the probability of the chosen answer against all others (a two-outcome
softmax, `scale`): the table stores that probability (`raw_confidence`) for every discrete
answer, whether the class was scored from log-probabilities or a label set was generated under
a grammar, so one rule calibrates every class task, and a stored answer reused by a later run
is calibrated with that run's file at no engine cost.

Temperature scaling (Guo et al. 2017) is scikit-learn's (`CalibratedClassifierCV`,
`method="temperature"`, imported only where a fit runs, fitted on answers the model already
gave through a pass-through estimator); the per-label precision/recall curve is scikit-learn's. ECE and Brier's score are
written here (scikit-learn has only the binned curve, and a Brier loss that scores only the
positive class of a two-class task).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from emoray.lake import locations
from emoray.config import ConfigError, EngineConfig, S3Config

ECE_BINS = 15


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T for which softmax(log(probs) / T) best fits `labels` (the index of the
    right class per row) in log-likelihood; T > 1 softens an over-confident model."""
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator
    from sklearn.model_selection import KFold

    class _GivenProbabilities(ClassifierMixin, BaseEstimator):
        """A classifier whose `predict_proba(X)` is X: the class probabilities the model gave."""

        def fit(self, X, y):
            self.classes_ = np.arange(np.asarray(X).shape[1])
            return self

        def predict_proba(self, X):
            return np.asarray(X, dtype=float)

        def predict(self, X):
            return np.asarray(X).argmax(axis=1)

    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels)
    given = FrozenEstimator(_GivenProbabilities().fit(probs, labels))
    # the estimator is frozen, so the folds only pass the given probabilities through; two
    # unstratified ones avoid the stratified split's warning about rare classes
    calibrated = CalibratedClassifierCV(given, method="temperature", ensemble=False,
                                        cv=KFold(2)).fit(probs, labels)
    return float(1.0 / calibrated.calibrated_classifiers_[0].calibrators[0].beta_)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / T), row by row."""
    logits = np.log(np.clip(np.asarray(probs, dtype=float), 1e-12, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def scale(confidence, temperature) -> np.ndarray:
    """The chosen answer's probability p after temperature T (a number, or one per row as an
    (n, 1) array), against the rest: p^(1/T) / (p^(1/T) + (1 - p)^(1/T)); T > 1 pulls it
    towards 1/2, T < 1 away."""
    p = np.clip(np.asarray(confidence, dtype=float), 1e-12, 1 - 1e-12)
    return apply_temperature(np.column_stack([1 - p, p]), temperature)[:, 1]


MIN_ROWS = 10
"""Fewest answers a temperature is fitted on; at least two of them right and two wrong."""


def fit_scale(confidence, correct) -> float | None:
    """The temperature for `scale` that best fits whether each answer was right, or None when
    the answers are too few or all right or all wrong (no temperature is identified)."""
    p = np.clip(np.asarray(confidence, dtype=float), 1e-12, 1 - 1e-12)
    right = np.asarray(correct, dtype=int)
    if len(p) < MIN_ROWS or min(right.sum(), len(right) - right.sum()) < 2:
        return None
    return fit_temperature(np.column_stack([1 - p, p]), right)


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


def spearman(confidence: list[float], error: list[float]) -> float | None:
    """Spearman's rank correlation of confidence with absolute error (scipy's), or None when
    fewer than three rows or either side is constant."""
    from scipy.stats import spearmanr

    if len(confidence) < 3 or len(set(confidence)) < 2 or len(set(error)) < 2:
        return None
    return round(float(spearmanr(confidence, error).statistic), 4)


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    """Brier's score: the mean over rows of the squared distance between the class
    probabilities and the one-hot truth, summed over classes (0 perfect, 2 worst). Written
    here because scikit-learn's `brier_score_loss` scores only the positive class of a
    two-class task, which would halve it for the binary tasks."""
    probs = np.asarray(probs, dtype=float)
    onehot = np.eye(probs.shape[1])[np.asarray(labels)]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def lowest_threshold(confidence, correct, max_loss: float) -> dict | None:
    """The lowest confidence t at which the answers at or above t (ties taken together) are
    right at least `1 - max_loss` of the time on these rows, with the share accepted and their
    accuracy; None when no t reaches it."""
    c, r = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    order = np.argsort(-c, kind="stable")
    c, r = c[order], r[order]
    right, n = np.cumsum(r), np.arange(1, len(c) + 1)
    ends = np.r_[c[1:] != c[:-1], True] if len(c) else np.array([], dtype=bool)
    reached = np.flatnonzero(ends & (right >= (1 - max_loss) * n))
    if not len(reached):
        return None
    i = int(reached[-1])
    return {"threshold": float(c[i]), "max_loss": max_loss, "n": len(c),
            "accepted_share": round((i + 1) / len(c), 4),
            "accuracy": round(float(right[i]) / (i + 1), 4)}


FORMAT = "emoray-calibration/1"
UNCALIBRATED = "uncalibrated"
"""The `calibration` value of a row whose confidence is the model's own probability."""


class CalibrationError(ConfigError):
    """A calibration file that cannot be read or does not fit the run (a configuration
    error: exit code 2, before any engine starts)."""


@dataclass(frozen=True)
class Calibration:
    """Temperatures per task of one model (its `ModelSpec.identity`), each valid for the
    prompt version it was fitted under; `fitted` holds provenance and before/after figures,
    which are not part of the version."""

    model: str
    temperatures: dict[str, dict]
    """task → {"prompt_version": …, "temperature": T, "n": rows fitted on}"""
    fitted: dict = field(default_factory=dict)
    expected_score: list[str] = field(default_factory=list)
    """Regression tasks whose expected value correlated better with the gold scores than the
    greedy answer: the default of `EngineConfig.expected_score` under this file."""
    thresholds: dict[str, dict] = field(default_factory=dict)
    """task → {"threshold": t, "max_loss": …, "accepted_share": …, "accuracy": …, "n": …}: a
    cascade step's acceptance threshold (`calibrate --max-loss`; not part of the version, as it
    changes no row this file calibrates)."""

    @property
    def version(self) -> str:
        """12 hex digits over model, tasks, prompt versions, temperatures and scoring rules:
        any change to what is applied changes it."""
        key = json.dumps({"model": self.model, "temperatures": self.temperatures,
                          **({"expected_score": self.expected_score}
                             if self.expected_score else {})}, sort_keys=True)
        return hashlib.sha256(key.encode()).hexdigest()[:12]

    @property
    def tag(self) -> str:
        """What a row calibrated with this file records in its `calibration` column."""
        return f"temperature@{self.version}"

    def temperature(self, task: str, prompt_version: str) -> float | None:
        entry = self.temperatures.get(task)
        if entry and entry["prompt_version"] == prompt_version:
            return entry["temperature"]
        return None

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": self.version, "model": self.model,
                           "temperatures": self.temperatures,
                           "expected_score": self.expected_score,
                           **({"thresholds": self.thresholds} if self.thresholds else {}),
                           "fitted": self.fitted},
                          indent=2)

    def engine(self, engine: EngineConfig) -> EngineConfig:
        """`engine` with this file's `expected_score`, unless the run set it itself."""
        if "expected_score" in engine.model_fields_set:
            return engine
        return engine.model_copy(update={"expected_score": list(self.expected_score)})

    @classmethod
    def from_json(cls, text: str, where: str) -> Calibration:
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
            for task, entry in data["temperatures"].items():
                if not (isinstance(entry.get("prompt_version"), str)
                        and float(entry["temperature"]) > 0):
                    raise ValueError(f"task {task}: needs prompt_version and a temperature > 0")
            expected = data.get("expected_score", [])
            if not (isinstance(expected, list) and all(isinstance(t, str) for t in expected)):
                raise ValueError("expected_score must be a list of task names")
            thresholds = data.get("thresholds", {})
            for task, entry in thresholds.items():
                if not 0 <= float(entry["threshold"]) <= 1:
                    raise ValueError(f"task {task}: threshold outside [0, 1]")
            return cls(data["model"], data["temperatures"], data.get("fitted", {}), expected,
                       thresholds)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CalibrationError(f"calibration file {where} is not one `emoray calibrate` "
                                   f"writes ({e}); fit a new one with `emoray calibrate`"
                                   ) from None


def load(path: str, s3: S3Config, model) -> Calibration:
    """The calibration file at `path` (local or s3://), checked to be fitted for `model` (a
    `ModelSpec`: the same checkpoint under any folder name counts)."""
    import pyarrow as pa

    fs, where = locations.filesystem_for(path, s3)
    try:
        with fs.open_input_stream(where) as f:
            text = f.read().decode("utf-8")
    except (FileNotFoundError, OSError, UnicodeDecodeError) as e:
        raise CalibrationError(f"calibration file {path} cannot be read ({e}); write one with "
                               "`emoray calibrate --model M --output DIR`") from None
    calibration = Calibration.from_json(text, path)
    if not model.same_model(pa.array([calibration.model])).to_pylist()[0]:
        raise CalibrationError(
            f"calibration file {path} was fitted for model {calibration.model}, not "
            f"{model.identity}: fit one for this model with `emoray calibrate`, or leave "
            "--calibration unset (confidences are then marked uncalibrated)")
    return calibration


def save(calibration: Calibration, path: str, s3: S3Config) -> None:
    fs, where = locations.filesystem_for(path, s3)
    with fs.open_output_stream(where) as f:
        f.write(calibration.to_json().encode())


def calibrate_rows(calibration: Calibration | None, tasks: list[str],
                   prompt_versions: list[str], confidences: list[float | None]
                   ) -> tuple[list[float | None], list[str | None]]:
    """(confidence, calibration) per row from the model's own confidence: scaled with
    `calibration`'s temperature for the row's task and prompt version, or left as it is and
    marked UNCALIBRATED; a row without a confidence gets neither."""
    temps = [calibration.temperature(task, version) if calibration and conf is not None else None
             for task, version, conf in zip(tasks, prompt_versions, confidences)]
    scaled = [i for i, t in enumerate(temps) if t is not None]
    out_conf = list(confidences)
    if scaled:  # one vectorised scale for the batch: this runs on every parsed row
        values = scale([confidences[i] for i in scaled], np.array([[temps[i]] for i in scaled]))
        for i, v in zip(scaled, values.tolist()):
            out_conf[i] = v
    out_tag = [None if c is None else UNCALIBRATED if t is None else calibration.tag
               for c, t in zip(confidences, temps)]
    return out_conf, out_tag
