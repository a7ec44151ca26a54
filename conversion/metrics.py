"""Classification scores shared by the gate (validate.py) and the fine-tune's held-out check (finetune.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassificationScores:
    accuracy: float
    macro_f1: float
    balanced_accuracy: float


def classification_scores(
    pred: np.ndarray | Sequence[int], gold: np.ndarray | Sequence[int], classes: int
) -> ClassificationScores:
    """Accuracy, macro-F1 and balanced accuracy (mean per-class recall over the classes present), in
    [0, 1], from scikit-learn."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

    labels = list(range(classes))
    return ClassificationScores(
        float(accuracy_score(gold, pred)),
        float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
        float(balanced_accuracy_score(gold, pred)),
    )
