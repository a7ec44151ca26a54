"""The optional compression step: structured pruning and/or SVD factorization, then recovery distillation
from the unpruned teacher (prune.py, factorize.py, distill.py), before export."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

from conversion.recipe import Recipe


def wants_compression(recipe: Recipe) -> bool:
    return recipe.prune is not None or recipe.factorize is not None


def token_batches(tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 32) -> Iterator[Any]:
    """Padded PyTorch inputs of `texts`, `batch_size` at a time (pruning importance, smoothing)."""
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        yield dict(
            tokenizer(chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        )


def compress(loaded: Any, recipe: Recipe) -> tuple[Any, dict[str, Any]]:
    """Returns (student checkpoint view, report). `loaded` (the teacher) is left as it was."""
    from conversion.distill import DistillConfig, load_training_texts, recover_by_distillation
    from conversion.prune import count_parameters
    from conversion.training import training_precision

    teacher = loaded.module
    student = copy.deepcopy(teacher)
    distill_cfg = recipe.distill or DistillConfig.model_validate({})
    texts, labels = load_training_texts(distill_cfg)
    report: dict[str, Any] = {"parameters_before": count_parameters(teacher)}
    if recipe.prune is not None:
        from conversion.prune import prune_model

        batches = token_batches(
            loaded.tokenizer, texts[: recipe.prune.importance_texts], distill_cfg.max_length
        )
        prune_model(student.model, recipe.prune, batches)
        report["prune"] = recipe.prune.model_dump(mode="json")
    if recipe.factorize is not None:
        from conversion.factorize import factorize_model

        factorize_model(student.model, recipe.factorize)
        report["factorize"] = recipe.factorize.model_dump(mode="json")
    if recipe.distill is not None:
        use_labels = recipe.kind == "sequence-classification" and recipe.distill.hard_label_weight > 0
        hard = labels if use_labels else None
        recover_by_distillation(student, teacher, recipe.kind, loaded.tokenizer, texts, recipe.distill, hard)
        report["distill"] = recipe.distill.model_dump(mode="json")
        report["distill_precision"] = training_precision()
    student.eval()
    report["parameters_after"] = count_parameters(student)
    config = dict(loaded.config)
    hf_config = student.model.config
    config.update(
        num_hidden_layers=hf_config.num_hidden_layers,
        intermediate_size=hf_config.intermediate_size,
        pruned_heads={str(k): list(v) for k, v in (hf_config.pruned_heads or {}).items()},
    )
    if recipe.factorize is not None:
        config["factorized"] = True
    return dataclasses.replace(loaded, module=student, config=config), report
