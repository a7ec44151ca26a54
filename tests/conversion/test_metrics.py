import numpy as np
import pytest

from conversion.metrics import classification_scores


def test_accuracy_and_macro_f1_of_plain_lists() -> None:
    scores = classification_scores([1, 1, 0, 0], [1, 0, 0, 0], 2)
    assert scores.accuracy == 0.75
    assert scores.macro_f1 == pytest.approx((2 / 3 + 0.8) / 2)


def test_accuracy_macro_f1_and_balanced_accuracy() -> None:
    scores = classification_scores(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), 2)
    assert scores.accuracy == 0.75
    assert scores.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)
    assert scores.balanced_accuracy == pytest.approx((1.0 + 2 / 3) / 2)
    majority = classification_scores(np.ones(10, dtype=int), np.array([1] * 9 + [0]), 2)
    assert (majority.accuracy, majority.balanced_accuracy) == (0.9, 0.5)
    assert majority.macro_f1 == pytest.approx((0 + 18 / 19) / 2)
