"""Low-rank factorization: each targeted nn.Linear W (out x in) becomes B @ A from a truncated SVD.

Only where it really saves work: rank * (in + out) < in * out. The factorized model is exported from
memory (its config no longer describes its layers, so it is not a reloadable HF checkpoint); recover its
accuracy with `conversion.distill.recover_by_distillation` before export.
"""

from __future__ import annotations

import re

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

LAYER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)
_IN_LAYER = re.compile(r"(?:^|\.)layer\.\d+\.(.+)$")


class FactorizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=1)
    targets: list[str] = Field(
        default_factory=lambda: ["intermediate.dense", "output.dense"],
        description=f"Linear layers named relative to an encoder layer: {', '.join(LAYER_LINEARS)}",
    )

    @field_validator("targets")
    @classmethod
    def _known(cls, targets: list[str]) -> list[str]:
        unknown = [t for t in targets if t not in LAYER_LINEARS]
        if unknown or not targets:
            raise ValueError(f"unknown factorization targets {unknown}; choose from {list(LAYER_LINEARS)}")
        return targets


def low_rank_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A: rank x in, B: out x rank) with B @ A the best rank-`rank` approximation of `weight`."""
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    a = (root[:, None] * vh[:rank]).to(weight.dtype)
    b = (u[:, :rank] * root[None, :]).to(weight.dtype)
    return a, b


def factorize_linear(linear: nn.Linear, rank: int) -> nn.Sequential:
    """Two Linears (in -> rank without bias, rank -> out with the original bias)."""
    a, b = low_rank_factors(linear.weight, rank)
    first = nn.Linear(linear.in_features, rank, bias=False)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        first.weight.copy_(a)
        second.weight.copy_(b)
        if linear.bias is not None:
            second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


def saves_work(linear: nn.Linear, rank: int) -> bool:
    return rank * (linear.in_features + linear.out_features) < linear.in_features * linear.out_features


def factorize_model(model: nn.Module, cfg: FactorizeConfig) -> nn.Module:
    """Replaces every targeted Linear of every encoder layer in place; returns the model."""
    replaced, skipped = 0, 0
    for name, module in list(model.named_modules()):
        match = _IN_LAYER.search(name)
        if not match or match.group(1) not in cfg.targets or not isinstance(module, nn.Linear):
            continue
        if not saves_work(module, cfg.rank):
            skipped += 1
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, factorize_linear(module, cfg.rank))
        replaced += 1
    if replaced + skipped == 0:
        raise ValueError(f"no Linear layer matches the factorization targets {cfg.targets}")
    print(
        f"factorized {replaced} Linear layer(s) at rank {cfg.rank}"
        + (f"; {skipped} left as they are (rank too high to save work)" if skipped else "")
    )
    return model
