"""The optimizer step shared by the fine-tunes and the distillation: one place for clipping and scheduling."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

PRECISION_ENV = "CONVERSION_TRAINING_PRECISION"


def training_precision() -> Literal["bf16", "fp32"]:
    """How training forward passes multiply: `CONVERSION_TRAINING_PRECISION` = `bf16`, `fp32`, or `auto` (the
    default: bf16 where the CPU multiplies bf16 natively, AVX512-BF16 or AMX, else fp32)."""
    wanted = os.environ.get(PRECISION_ENV, "auto").strip().lower()
    if wanted == "auto":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return "bf16" if native else "fp32"
    if wanted == "bf16":
        return "bf16"
    if wanted == "fp32":
        return "fp32"
    raise ValueError(f"{PRECISION_ENV}={wanted!r}: expected auto, bf16 or fp32")


def mixed_precision() -> torch.autocast:
    """bf16 autocast on the CPU when `training_precision()` is bf16: matrix products in bf16, the weights and
    the optimizer state in fp32; losses follow autocast's rules (cross-entropy and MSE in fp32; the
    distillation losses cast their inputs to fp32). docs/conversion.md#training-precision."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=training_precision() == "bf16")


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


class EncoderSettings(Protocol):
    max_length: int
    freeze_word_embeddings: bool
    freeze_lower_layers: int
    seed: int
    threads: int


def sentence_encoder(base_dir: Path, out_dir: Path, cfg: EncoderSettings) -> tuple[Any, Any]:
    """The sentence-transformers model in `base_dir` (offline) and its transformer, set up for fine-tuning
    into `out_dir` (checked replaceable first): seeded, `cfg.threads` threads, the word embeddings and the
    `cfg.freeze_lower_layers` lowest layers frozen as asked."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from conversion.checkpoint import check_checkpoint_dir
    from conversion.checkpoint_dir import check_replaceable
    from conversion.finetune import freeze_lower_layers

    check_checkpoint_dir(base_dir)
    check_replaceable(out_dir)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = SentenceTransformer(str(base_dir), device="cpu", local_files_only=True)
    model.max_seq_length = cfg.max_length
    encoder: Any = model[0].auto_model
    if cfg.freeze_word_embeddings:
        encoder.get_input_embeddings().weight.requires_grad_(False)
    freeze_lower_layers(encoder, cfg.freeze_lower_layers)
    return model, encoder


def adamw_with_warmup(
    params: list[torch.nn.Parameter], lr: float, warmup_fraction: float, steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW (weight decay 0.01) and a linear schedule: warm-up over `warmup_fraction` of `steps`, then decay
    to 0."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(warmup_fraction * steps), steps
    )
    return optimizer, scheduler
