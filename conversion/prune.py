"""Structured pruning of BERT encoders: attention heads and FFN neurons by importance, and whole layers.

Pruned parts are really removed (smaller Linear layers, fewer layers), not masked, and the config is updated
(`pruned_heads`, `intermediate_size`, `num_hidden_layers`) so the checkpoint saves and reloads with
`from_pretrained` and the exported ONNX graph is smaller.

Importance (Michel et al., 2019): |dL/dm| summed over batches, for a mask m = 1 multiplied into each head's
context vector and each FFN neuron's activation. L is a proxy loss that needs no labels: cross-entropy to
the model's own predictions (classifiers), binary cross-entropy to its own sign (cross-encoders), or an
in-batch contrastive loss against the unpruned embeddings (bi-encoders).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

Batch = dict[str, torch.Tensor]


class PruneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    heads_keep_fraction: float = Field(1.0, gt=0, le=1)
    ffn_keep_fraction: float = Field(1.0, gt=0, le=1)
    drop_layers: list[int] = Field(default_factory=list, description="encoder layer indices, before pruning")
    importance_texts: int = Field(256, ge=1)

    @property
    def prunes_units(self) -> bool:
        return self.heads_keep_fraction < 1 or self.ffn_keep_fraction < 1


def encoder_layers(model: nn.Module) -> Any:
    """The `encoder.layer` ModuleList of a BERT-like model (the model itself or a task head around it)."""
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} is not a BERT-like encoder (no encoder.layer list)")
    return layers


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def drop_layers(model: nn.Module, drop: Iterable[int]) -> nn.Module:
    """Removes encoder layers in place; renumbers `config.pruned_heads` to the remaining layers."""
    layers = encoder_layers(model)
    n = len(layers)
    dropped = sorted(set(drop))
    if any(i < 0 or i >= n for i in dropped):
        raise ValueError(f"drop_layers {dropped} out of range for a model with {n} layers")
    if len(dropped) >= n:
        raise ValueError(f"drop_layers {dropped} would remove all {n} layers")
    if not dropped:
        return model
    kept = [i for i in range(n) if i not in dropped]
    layers_list = [layers[i] for i in kept]
    base: Any = getattr(model, "base_model", model)
    base.encoder.layer = nn.ModuleList(layers_list)
    config: Any = model.config
    config.num_hidden_layers = len(kept)
    old_pruned = {int(k): list(v) for k, v in (config.pruned_heads or {}).items()}
    config.pruned_heads = {new: old_pruned[old] for new, old in enumerate(kept) if old_pruned.get(old)}
    return model


def _proxy_loss(model: nn.Module, batch: Batch, reference: torch.Tensor | None) -> torch.Tensor:
    out = model(**batch)
    logits = getattr(out, "logits", None)
    if logits is not None:
        if "labels" in batch:
            return out.loss  # type: ignore[no-any-return]
        if logits.shape[-1] == 1:
            score = logits.squeeze(-1)
            return nn.functional.binary_cross_entropy_with_logits(score, (score > 0).float().detach())
        return nn.functional.cross_entropy(logits, logits.argmax(-1).detach())
    from conversion.modeling import mean_pool_normalize

    emb = mean_pool_normalize(out.last_hidden_state, batch["attention_mask"])
    assert reference is not None
    # Contrastive: each text's pruned embedding must stay closest to its own unpruned embedding.
    similarity = emb @ reference.T / 0.05
    return nn.functional.cross_entropy(similarity, torch.arange(len(emb), device=emb.device))


def _is_embedding_model(model: nn.Module) -> bool:
    return not hasattr(model, "classifier") and not hasattr(model, "score")


def importance_scores(
    model: nn.Module, batches: Iterable[Batch], max_texts: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer: |dL/d head mask| (one value per current head) and |dL/d neuron mask| (per FFN neuron)."""
    layers = encoder_layers(model)
    device = next(model.parameters()).device
    head_masks = [
        torch.ones(layer.attention.self.num_attention_heads, device=device, requires_grad=True)
        for layer in layers
    ]
    ffn_masks = [
        torch.ones(layer.intermediate.dense.out_features, device=device, requires_grad=True)
        for layer in layers
    ]
    head_scores = [torch.zeros_like(m) for m in head_masks]
    ffn_scores = [torch.zeros_like(m) for m in ffn_masks]

    active = [True]  # hooks pass outputs through unchanged while the unpruned reference is computed

    def head_hook(mask: torch.Tensor) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if not active[0]:
                return output
            context = output[0] if isinstance(output, tuple) else output
            shape = context.shape
            masked = (context.view(*shape[:-1], mask.numel(), -1) * mask[:, None]).view(shape)
            return (masked, *output[1:]) if isinstance(output, tuple) else masked

        return hook

    def ffn_hook(mask: torch.Tensor) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return output * mask if active[0] else output

        return hook

    handles = []
    for layer, hm, fm in zip(layers, head_masks, ffn_masks, strict=True):
        handles.append(layer.attention.self.register_forward_hook(head_hook(hm)))
        handles.append(layer.intermediate.register_forward_hook(ffn_hook(fm)))
    was_training = model.training
    model.eval()
    embedding_model = _is_embedding_model(model)
    seen = 0
    try:
        with tqdm(total=max_texts, desc="importance", unit="text") as bar:
            for batch in batches:
                if seen >= max_texts:
                    break
                batch = {k: v.to(device) for k, v in batch.items()}
                reference = None
                if embedding_model:
                    from conversion.modeling import mean_pool_normalize

                    active[0] = False
                    with torch.no_grad():
                        hidden = model(**batch).last_hidden_state
                        reference = mean_pool_normalize(hidden, batch["attention_mask"])
                    active[0] = True
                loss = _proxy_loss(model, batch, reference)
                grads = torch.autograd.grad(loss, [*head_masks, *ffn_masks])
                for i in range(len(layers)):
                    head_scores[i] += grads[i].abs()
                    ffn_scores[i] += grads[len(layers) + i].abs()
                n = len(batch["input_ids"])
                seen += n
                bar.update(min(n, max_texts - bar.n))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if seen == 0:
        raise ValueError("no importance batches were given")
    return head_scores, ffn_scores


def _keep_count(total: int, fraction: float) -> int:
    return max(1, min(total, round(total * fraction)))


def prune_heads_by_importance(model: nn.Module, scores: list[torch.Tensor], keep_fraction: float) -> None:
    """Keeps the same number of most important heads in every layer (`model.prune_heads`)."""
    config: Any = model.config
    layers = encoder_layers(model)
    to_prune: dict[int, list[int]] = {}
    for i, (layer, score) in enumerate(zip(layers, scores, strict=True)):
        already = set(layer.attention.pruned_heads)
        current = [h for h in range(config.num_attention_heads) if h not in already]  # original ids
        keep = _keep_count(len(current), keep_fraction)
        order = torch.argsort(score, descending=True).tolist()
        drop = sorted(current[j] for j in order[keep:])
        if drop:
            to_prune[i] = drop
    if to_prune:
        model.prune_heads(to_prune)  # type: ignore[operator]


def prune_ffn_by_importance(model: nn.Module, scores: list[torch.Tensor], keep_fraction: float) -> None:
    """Keeps the same number of most important FFN neurons in every layer; updates intermediate_size."""
    from transformers import pytorch_utils

    prune_linear_layer: Any = pytorch_utils.prune_linear_layer
    layers = encoder_layers(model)
    sizes = {layer.intermediate.dense.out_features for layer in layers}
    if len(sizes) != 1:
        raise ValueError(f"FFN sizes differ between layers ({sorted(sizes)}); cannot express in a config")
    keep = _keep_count(sizes.pop(), keep_fraction)
    for layer, score in zip(layers, scores, strict=True):
        index = (
            torch.argsort(score, descending=True)[:keep].sort().values.to(layer.output.dense.weight.device)
        )
        layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, index, dim=0)
        layer.output.dense = prune_linear_layer(layer.output.dense, index, dim=1)
    config: Any = model.config
    config.intermediate_size = keep


def prune_model(model: nn.Module, cfg: PruneConfig, batches: Iterable[Batch]) -> nn.Module:
    """Drops layers, then removes the least important heads and FFN neurons, in place; returns the model.

    `batches` are tokenized inputs (input_ids, attention_mask[, token_type_ids][, labels]) of real texts;
    they are read only when heads or neurons are pruned, up to `cfg.importance_texts` texts.
    """
    before = count_parameters(model)
    drop_layers(model, cfg.drop_layers)
    if cfg.prunes_units:
        head_scores, ffn_scores = importance_scores(model, batches, cfg.importance_texts)
        if cfg.heads_keep_fraction < 1:
            prune_heads_by_importance(model, head_scores, cfg.heads_keep_fraction)
        if cfg.ffn_keep_fraction < 1:
            prune_ffn_by_importance(model, ffn_scores, cfg.ffn_keep_fraction)
    after = count_parameters(model)
    print(f"pruned: {before / 1e6:.2f}M -> {after / 1e6:.2f}M parameters ({after / before:.0%})")
    return model
