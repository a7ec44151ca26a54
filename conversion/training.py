"""The optimizer step shared by the fine-tunes and the distillation: one place for clipping and scheduling."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def optimizer_step(
    loss: torch.Tensor,
    params: Iterable[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    bar: Any,
) -> None:
    """Backpropagates `loss`, clips the gradient norm to 1, steps optimizer and learning-rate schedule, and
    advances the progress bar (tqdm) with the loss."""
    loss.backward()  # type: ignore[no-untyped-call]
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    bar.update(1)
    bar.set_postfix(loss=f"{loss.item():.4f}")
