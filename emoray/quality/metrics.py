"""Scores of predicted against gold answers, as the EmoLLMs paper and SemEval-2018 Task 1 compute
them: Pearson r for regression and ordinal tasks, accuracy and macro-F1 for single-label classes,
and for multi-label emotions Jaccard accuracy with micro- and macro-F1.

Each metric takes the task (for its label set) and two equally long lists of parsed answers
(`emoray.answers.Parsed`). Degenerate inputs return a number, never NaN: Pearson r of a constant
series (every prediction, or every gold value, the same) or of fewer than two rows is undefined
and scored 0.0 — a constant predictor carries no ordering information. Macro-F1 averages over the
classes that occur in the gold or the predicted answers (a class absent from both says nothing);
multi-label F1 with no emotion in either is 1.0 (full agreement that there is none).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score, jaccard_score
from sklearn.preprocessing import MultiLabelBinarizer

from emoray.answers import Parsed
from emoray.tasks import Task


def pearson(task: Task, gold: list[Parsed], pred: list[Parsed]) -> float:
    g = np.array([p.score for p in gold], dtype=float)
    y = np.array([p.score for p in pred], dtype=float)
    if len(g) < 2 or np.ptp(g) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(pearsonr(g, y).statistic)


def accuracy(task: Task, gold: list[Parsed], pred: list[Parsed]) -> float:
    return float(accuracy_score([p.score for p in gold], [p.score for p in pred])) if gold else 0.0


def macro_f1(task: Task, gold: list[Parsed], pred: list[Parsed]) -> float:
    if not gold:
        return 0.0
    if task.answer.column == "labels":  # label sets: per-label F1
        return _set_f1(task, gold, pred, "macro")
    return float(f1_score([p.score for p in gold], [p.score for p in pred], average="macro",
                          zero_division=0))


def micro_f1(task: Task, gold: list[Parsed], pred: list[Parsed]) -> float:
    return _set_f1(task, gold, pred, "micro") if gold else 0.0


def jaccard(task: Task, gold: list[Parsed], pred: list[Parsed]) -> float:
    """Mean over rows of |gold ∩ pred| / |gold ∪ pred|, neutral counting as a label (so a
    neutral row predicted neutral scores 1, as in SemEval-2018 E-c)."""
    if not gold:
        return 0.0
    binarize = MultiLabelBinarizer(classes=_label_set(task, with_neutral=True))
    g = binarize.fit_transform([p.labels for p in gold])
    y = binarize.transform([p.labels for p in pred])
    return float(jaccard_score(g, y, average="samples", zero_division=1))


def _label_set(task: Task, with_neutral: bool) -> list[str]:
    labels = list(task.answer.labels)
    return labels + [task.answer.neutral] if with_neutral else labels


def _set_f1(task: Task, gold: list[Parsed], pred: list[Parsed], average: str) -> float:
    """F1 over the emotion labels; neutral counts as a class only where it combines with
    emotions (GoEmotions), not where it means "no emotion" (SemEval E-c)."""
    binarize = MultiLabelBinarizer(
        classes=_label_set(task, with_neutral=task.answer.combinable_neutral))
    keep = set(binarize.classes)
    g = binarize.fit_transform([[x for x in p.labels if x in keep] for p in gold])
    y = binarize.transform([[x for x in p.labels if x in keep] for p in pred])
    present = (g.sum(axis=0) + y.sum(axis=0)) > 0
    if not present.any():
        return 1.0
    if average == "micro":
        return float(f1_score(g, y, average="micro", zero_division=0))
    return float(np.mean(f1_score(g[:, present], y[:, present], average=None, zero_division=0)))


METRICS: dict[str, Callable[[Task, list[Parsed], list[Parsed]], float]] = {
    "pearson": pearson, "accuracy": accuracy, "macro_f1": macro_f1,
    "micro_f1": micro_f1, "jaccard": jaccard,
}


def score(task: Task, gold: list[Parsed], pred: list[Parsed]) -> dict[str, float]:
    """Every metric the task declares, rounded to 4 places."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold answers but {len(pred)} predictions")
    return {name: round(METRICS[name](task, gold, pred), 4) for name in task.metrics}
