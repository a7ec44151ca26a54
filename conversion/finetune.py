"""Fine-tune a sequence classifier from a base checkpoint on labelled text (`text<TAB>label` TSV)."""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from conversion.data import DataError
from conversion.data.sentiment import LABEL_NAMES, TrainingMix, load_training_mix, refuse_validation_set
from conversion.metrics import classification_scores
from conversion.training import mixed_precision, optimizer_step, training_precision

DEFAULT_LABELS = ["negative", "positive"]


class FinetuneConfig(BaseModel):
    """Training settings. The defaults (MiniLM-L6 on 16k SST-2 train texts) took 177 s on 2 otherwise idle
    CPU cores and reach 87.3% on SST-2 validation; they are several times slower on a loaded machine."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1, ge=1)
    max_train_texts: int = Field(16_000, ge=1)
    heldout_texts: int = Field(500, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_fraction: float = Field(0.06, ge=0, lt=1)
    max_length: int = Field(64, ge=8)
    freeze_lower_layers: int = Field(0, ge=0)
    # The word-embedding matrix is half of MiniLM's weights: freezing it makes steps cheaper and keeps
    # the vocabulary unseen in a few thousand sentences where pre-training put it.
    freeze_word_embeddings: bool = True
    seed: int = 0
    threads: int = Field(2, ge=1)
    device: str = "cpu"


@dataclass(frozen=True)
class LabelledTexts:
    texts: list[str]
    labels: list[int]


def read_labelled_tsv(path: Path, labels: Sequence[str]) -> LabelledTexts:
    """Reads `text<TAB>label` with a header row; a label is a class index (0, 1, ...) or a class name."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    index = {name: i for i, name in enumerate(labels)} | {str(i): i for i in range(len(labels))}
    texts: list[str] = []
    ids: list[int] = []
    with path.open(newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None or [h.strip().lower() for h in header[:2]] != ["text", "label"]:
            raise DataError(f"{path}: expected a header row 'text<TAB>label', got {header!r}")
        for line_no, row in enumerate(rows, start=2):
            if len(row) != 2:
                raise DataError(f"{path}:{line_no}: expected 2 tab-separated columns, got {len(row)}")
            text, label = row[0].strip(), row[1].strip()
            if label not in index:
                raise DataError(f"{path}:{line_no}: unknown label {label!r}; known: {list(labels)}")
            if text:
                texts.append(text)
                ids.append(index[label])
    if not texts:
        raise DataError(f"{path}: no labelled rows")
    return LabelledTexts(texts, ids)


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, group: int = 50
) -> list[list[int]]:
    """Shuffles, sorts each window of `group` batches by length, then shuffles the batches: less padding."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * group
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _encode(tokenizer: object, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(  # type: ignore[operator]
        list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return dict(enc)


def iter_text_batches(
    texts: Sequence[str], tokenizer: object, batch_size: int, max_length: int
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Batches for inference, sorted by length (padding per batch); yields original indices with inputs."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, _encode(tokenizer, [texts[i] for i in idx], max_length)


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, tokenizer: object, texts: Sequence[str], max_length: int, batch_size: int = 64
) -> torch.Tensor:
    model.eval()
    out: torch.Tensor | None = None
    for idx, enc in iter_text_batches(texts, tokenizer, batch_size, max_length):
        logits = model(**enc).logits.float()
        if out is None:
            out = torch.empty(len(texts), logits.shape[-1])
        out[torch.tensor(idx)] = logits
    assert out is not None
    return out


def evaluate_classifier(
    model: torch.nn.Module, tokenizer: object, data: LabelledTexts, max_length: int, n_labels: int
) -> tuple[float, float]:
    """(accuracy, macro-F1) of a PyTorch sequence classifier."""
    pred = predict_logits(model, tokenizer, data.texts, max_length).argmax(-1).tolist()
    scores = classification_scores(pred, data.labels, n_labels)
    return scores.accuracy, scores.macro_f1


def freeze_lower_layers(model: torch.nn.Module, n: int) -> None:
    """Freezes the embeddings and the lowest `n` encoder layers (n=0: nothing is frozen)."""
    if n == 0:
        return
    base: Any = getattr(model, "base_model", model)
    layers = base.encoder.layer
    if n > len(layers):
        raise ValueError(f"freeze_lower_layers={n} but the model has only {len(layers)} layers")
    for module in [base.embeddings, *layers[:n]]:
        for p in module.parameters():
            p.requires_grad_(False)


def read_training_data(training: Path | TrainingMix, labels: Sequence[str]) -> tuple[LabelledTexts, str]:
    """The texts and labels of a `text<TAB>label` TSV or of a sentiment training mix, and a name for them."""
    if isinstance(training, TrainingMix):
        if list(labels) != list(LABEL_NAMES):
            raise DataError(
                f"a sentiment training mix has the labels {list(LABEL_NAMES)}, not {list(labels)}"
            )
        mixed = load_training_mix(training)
        return LabelledTexts(mixed.texts, mixed.labels), training.describe()
    return read_labelled_tsv(refuse_validation_set(training), labels), training.name


def describe_training_data(training: Path | TrainingMix) -> dict[str, Any]:
    """What a checkpoint's marker records of its training data: the mix and each file's path and sha256."""
    from conversion.checkpoint_dir import describe_input
    from conversion.data import data_root

    if isinstance(training, TrainingMix):
        files = {name: describe_input(data_root() / "sentiment" / name) for name in training.files()}
        return {"mix": training.model_dump(mode="json"), "files": files}
    return describe_input(training)


def finetune(
    base_dir: Path,
    training: Path | TrainingMix,
    out_dir: Path,
    cfg: FinetuneConfig,
    labels: list[str] | None = None,
) -> Path:
    """Fine-tunes a sequence classifier from `base_dir` on `training` (a TSV or a sentiment training mix);
    writes an HF checkpoint to `out_dir`.

    `labels` (default negative/positive) are the class names in logit order; the TSV's label column holds
    a class index or a class name.
    """
    labels = list(labels) if labels is not None else list(DEFAULT_LABELS)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    from conversion.checkpoint import check_checkpoint_dir
    from conversion.checkpoint_dir import check_replaceable, describe_input, save_trained_checkpoint

    if isinstance(training, Path):
        refuse_validation_set(training)
    check_checkpoint_dir(base_dir)  # no pickles, no remote code, complete safetensors
    check_replaceable(out_dir)
    if len(set(labels)) != len(labels) or len(labels) < 2:
        raise ValueError(f"labels must be at least 2 distinct names, got {labels}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)

    data, data_name = read_training_data(training, labels)
    order = list(range(len(data.texts)))
    rng.shuffle(order)
    held = order[: cfg.heldout_texts]
    train = order[cfg.heldout_texts : cfg.heldout_texts + cfg.max_train_texts]
    if not train:
        raise DataError(f"{data_name}: no rows left for training after holding out {cfg.heldout_texts}")

    tokenizer = AutoTokenizer.from_pretrained(base_dir)  # type: ignore[no-untyped-call]
    model = AutoModelForSequenceClassification.from_pretrained(
        base_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        use_safetensors=True,
    )
    freeze_lower_layers(model, cfg.freeze_lower_layers)
    if cfg.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    device = torch.device(cfg.device)
    model.to(device)

    train_texts = [data.texts[i] for i in train]
    train_labels = torch.tensor([data.labels[i] for i in train])
    lengths = [len(t) for t in train_texts]
    steps_per_epoch = math.ceil(len(train_texts) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim == 1 else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(cfg.warmup_fraction * total), total
    )

    print(
        f"fine-tuning {base_dir.name} on {len(train_texts)} texts of {data_name} "
        f"({cfg.epochs} epoch(s), batch {cfg.batch_size}, lr {cfg.lr}, max_length {cfg.max_length}, "
        f"{cfg.freeze_lower_layers} lower layer(s) frozen)"
    )
    started = time.perf_counter()
    model.train()
    with tqdm(total=total, desc="finetune", unit="step") as bar:
        for _ in range(cfg.epochs):
            for batch in length_grouped_batches(lengths, cfg.batch_size, rng):
                enc = _encode(tokenizer, [train_texts[i] for i in batch], cfg.max_length)
                enc = {k: v.to(device) for k, v in enc.items()}
                with mixed_precision():
                    loss = model(**enc, labels=train_labels[batch].to(device)).loss
                optimizer_step(loss, model.parameters(), optimizer, scheduler, bar)
    elapsed = time.perf_counter() - started

    model.cpu()
    if held:
        held_data = LabelledTexts([data.texts[i] for i in held], [data.labels[i] for i in held])
        acc, f1 = evaluate_classifier(model, tokenizer, held_data, cfg.max_length, len(labels))
        print(
            f"held-out check, {len(held)} texts of {data_name} not trained on: "
            f"accuracy {acc:.4f}, macro-F1 {f1:.4f}"
        )
    print(f"training took {elapsed:.0f} s")

    trained = {
        "trained_by": "finetune",
        "settings": cfg.model_dump(mode="json"),
        "precision": training_precision(),
        "labels": labels,
        "base": describe_input(base_dir),
        "data": describe_training_data(training),
    }
    return save_trained_checkpoint(out_dir, model, tokenizer, trained)
