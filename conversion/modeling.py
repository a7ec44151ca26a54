"""The PyTorch module that is exported, and the reference every artifact is compared against.

One wrapper per model kind, called with keyword tensors: `logits` for classifiers and cross-encoders,
mean-pooled and L2-normalised `embeddings` for bi-encoders (pooling happens inside the graph).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from types import MethodType
from typing import Any

import torch
from torch import nn

from conversion.kinds import ModelKind


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(summed / counts, p=2.0, dim=1)


def reads_only_cls(model: nn.Module) -> bool:
    """A BERT classifier whose head reads the pooled [CLS] token (BertForSequenceClassification)."""
    bert = getattr(model, "bert", None)
    encoder = getattr(bert, "encoder", None)
    return (
        getattr(bert, "pooler", None) is not None
        and len(getattr(encoder, "layer", ())) > 0
        and isinstance(getattr(model, "classifier", None), nn.Module)
    )


def _cls_row_forward(
    layer: Any,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *_: Any,
    **__: Any,
) -> tuple[torch.Tensor]:
    """BertLayer.forward for the [CLS] row alone: its query against every token's keys and values (the
    layer's own attention, called as cross-attention), then the attention output and the FFN on one row."""
    if attention_mask is not None and attention_mask.dim() == 4 and attention_mask.shape[2] > 1:
        attention_mask = attention_mask[:, :, :1, :]  # [batch, 1, queries, keys]: the [CLS] query's row
    attended = layer.attention(
        hidden_states[:, :1], attention_mask=attention_mask, encoder_hidden_states=hidden_states
    )[0]
    return (layer.feed_forward_chunk(attended),)


@contextmanager
def cls_row_only(model: nn.Module) -> Iterator[None]:
    """Within: the classifier's last layer computes the [CLS] row only. The head reads nothing else, so the
    logits are the same, and an exported graph skips about 1 - 1/tokens of that layer's products (Q, the
    attention output and the FFN; keys and values still cover every token). Node names stay those of the
    model's own modules."""
    layers: Any = model.get_submodule("bert.encoder.layer")
    last = layers[-1]
    last.forward = MethodType(_cls_row_forward, last)
    try:
        yield
    finally:
        del last.forward


class InferenceModule(nn.Module):
    """`forward(input_ids, attention_mask[, token_type_ids])` -> logits or embeddings."""

    def __init__(self, model: nn.Module, kind: ModelKind, uses_token_type_ids: bool) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.uses_token_type_ids = uses_token_type_ids
        self.cls_only = kind != "bi-encoder" and reads_only_cls(model)

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
        with cls_row_only(self.model) if self.cls_only else nullcontext():
            out = self.model(**kwargs)
        if self.kind == "bi-encoder":
            return mean_pool_normalize(out.last_hidden_state, attention_mask)
        logits: torch.Tensor = out.logits
        return logits
