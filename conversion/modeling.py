"""The PyTorch module that is exported, and the reference every artifact is compared against.

One wrapper per model kind, called with keyword tensors: `logits` for classifiers and cross-encoders,
mean-pooled and L2-normalised `embeddings` for bi-encoders (pooling happens inside the graph).
"""

from __future__ import annotations

import torch
from torch import nn

from conversion.kinds import ModelKind


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(summed / counts, p=2.0, dim=1)


class InferenceModule(nn.Module):
    """`forward(input_ids, attention_mask[, token_type_ids])` -> logits or embeddings."""

    def __init__(self, model: nn.Module, kind: ModelKind, uses_token_type_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.uses_token_type_ids = uses_token_type_ids

    @property
    def input_names(self) -> list[str]:
        names = ["input_ids", "attention_mask"]
        return [*names, "token_type_ids"] if self.uses_token_type_ids else names

    @property
    def output_name(self) -> str:
        return "embeddings" if self.kind == "bi-encoder" else "logits"

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.uses_token_type_ids:
            kwargs["token_type_ids"] = (
                token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            )
        out = self.model(**kwargs)
        if self.kind == "bi-encoder":
            return mean_pool_normalize(out.last_hidden_state, attention_mask)
        logits: torch.Tensor = out.logits
        return logits
