"""The user tower of /v1/recommend: a user is the weighted mean of the embeddings of the items in their
history. The recommender's gate (conversion/recommendation.py) and its training (conversion/next_item.py)
compute the same weights, so what is validated is what is served."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def recency_weights(count: int, half_life: float | None) -> npt.NDArray[np.float64]:
    """Weights of `count` history items, oldest first: the newest weighs 1 and an item `half_life` items
    older weighs half as much; None weighs them all 1."""
    if half_life is None:
        return np.ones(count, dtype=np.float64)
    age = np.arange(count - 1, -1, -1, dtype=np.float64)
    weights: npt.NDArray[np.float64] = 0.5 ** (age / half_life)
    return weights
