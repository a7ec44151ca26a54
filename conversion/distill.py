"""Knowledge distillation: recover a pruned/factorized model from its unpruned teacher, or train a
smaller student (fewer layers, initialised from the teacher) on the teacher's soft labels.

Losses: classifiers, KL divergence of temperature-softened probabilities (x T^2), plus optional
cross-entropy on hard labels; cross-encoders, MSE on scores; bi-encoders, 1 - cosine of the mean-pooled,
L2-normalised embeddings. Optionally (`hidden_loss_weight`), an intermediate-layer loss: MSE between the
student's and the teacher's hidden states (embeddings and every layer, non-padding tokens), which needs the
same hidden size (pruning heads/FFN keeps it); a student with fewer layers is matched to evenly spaced
teacher layers (student layer j of n to teacher layer (j + 1) * N / n - 1, the top to the top).

Over several epochs the teacher runs once per text: its outputs of the first epoch (fp16, each text's own
tokens) are kept for the next ones while they fit in the free memory (`KeptTargets`).
"""

from __future__ import annotations

import copy
import os
import random
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from conversion.data import DataError
from conversion.data.sentiment import TrainingMix, refuse_validation_set
from conversion.finetune import length_grouped_batches
from conversion.kinds import ModelKind
from conversion.prune import encoder_layers
from conversion.training import mixed_precision, optimizer_step


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train_tsv: Path | None = Field(
        None, description="texts to distil on (`text<TAB>label`); None: `mix`, else sst2_train.tsv"
    )
    mix: TrainingMix | None = Field(None, description="a sentiment training mix to distil on")
    max_texts: int = Field(8000, ge=1)
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-4, gt=0)
    max_length: int = Field(64, ge=8)
    temperature: float = Field(2.0, gt=0)
    hard_label_weight: float = Field(0.0, ge=0, description="weight of cross-entropy on the TSV's labels")
    hidden_loss_weight: float = Field(
        0.0, ge=0, description="weight of the MSE between student and teacher hidden states (0: output only)"
    )
    freeze_word_embeddings: bool = True
    dropout: bool = Field(
        True, description="train the student with its dropout on (False: all of it off, ~17% cheaper a step)"
    )
    seed: int = 0
    threads: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DistillConfig:
        if self.train_tsv is not None and self.mix is not None:
            raise ValueError("give train_tsv or mix, not both")
        return self

    def training_data(self) -> Path | TrainingMix:
        """The TSV or the mix to distil on; refuses validation sets."""
        from conversion.data import data_root

        if self.mix is not None:
            return self.mix
        return refuse_validation_set(self.train_tsv or data_root() / "sentiment" / "sst2_train.tsv")


def model_output(model: nn.Module, batch: dict[str, torch.Tensor], kind: ModelKind) -> torch.Tensor:
    """Logits (classifier, cross-encoder) or pooled L2-normalised embeddings (bi-encoder), for an HF model
    or for conversion.modeling.InferenceModule (which already returns them)."""
    out = model(**batch)
    if isinstance(out, torch.Tensor):
        return out
    if kind == "bi-encoder":
        from conversion.modeling import mean_pool_normalize

        return mean_pool_normalize(out.last_hidden_state, batch["attention_mask"])
    logits: torch.Tensor = out.logits
    return logits


def _hf_model(model: nn.Module) -> nn.Module:
    inner = getattr(model, "model", None)  # conversion.modeling.InferenceModule wraps the HF model
    return inner if isinstance(inner, nn.Module) else model


def outputs_and_hidden(
    model: nn.Module, batch: dict[str, torch.Tensor], kind: ModelKind
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """What `model_output` returns, plus the hidden states (embeddings output, then every layer's)."""
    inputs = dict(batch)
    if getattr(model, "uses_token_type_ids", True) is False:
        inputs.pop("token_type_ids", None)
    out = _hf_model(model)(**inputs, output_hidden_states=True)
    hidden: tuple[torch.Tensor, ...] = tuple(out.hidden_states)
    if kind == "bi-encoder":
        from conversion.modeling import mean_pool_normalize

        return mean_pool_normalize(out.last_hidden_state, batch["attention_mask"]), hidden
    logits: torch.Tensor = out.logits
    return logits, hidden


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """For each student layer, the teacher layer whose output it imitates (the top one maps to the top)."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(
            f"a student with {student_layers} layers cannot imitate {teacher_layers} teacher layers"
        )
    return [(j + 1) * teacher_layers // student_layers - 1 for j in range(student_layers)]


def hidden_state_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean over matched layers (and the embeddings) of the per-token MSE, padding excluded."""
    if student[0].shape[-1] != teacher[0].shape[-1]:
        raise ValueError(
            f"hidden sizes differ (student {student[0].shape[-1]}, teacher {teacher[0].shape[-1]}); "
            "the hidden-state loss needs equal sizes"
        )
    pairs = [(student[0].float(), teacher[0].float())]
    pairs += [
        (student[j + 1].float(), teacher[t + 1].float())
        for j, t in enumerate(layer_map(len(student) - 1, len(teacher) - 1))
    ]
    mask = attention_mask.unsqueeze(-1).float()
    tokens = mask.sum().clamp(min=1) * student[0].shape[-1]
    total = sum((((s - t) ** 2) * mask).sum() / tokens for s, t in pairs)
    return torch.as_tensor(total) / len(pairs)


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    kind: ModelKind,
    temperature: float = 2.0,
    labels: torch.Tensor | None = None,
    hard_label_weight: float = 0.0,
) -> torch.Tensor:
    student, teacher = student.float(), teacher.float()  # bf16 under mixed_precision()
    if kind == "bi-encoder":
        return (1 - nn.functional.cosine_similarity(student, teacher, dim=-1)).mean()
    if kind == "cross-encoder":
        return nn.functional.mse_loss(student, teacher)
    t = temperature
    soft = nn.functional.kl_div(
        nn.functional.log_softmax(student / t, dim=-1),
        nn.functional.log_softmax(teacher / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    if labels is not None and hard_label_weight > 0:
        soft = soft + hard_label_weight * nn.functional.cross_entropy(student, labels)
    return soft


def _tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    return dict(enc)


@torch.no_grad()
def mean_distillation_loss(
    student: nn.Module,
    teacher: nn.Module,
    kind: ModelKind,
    tokenizer: Any,
    texts: Sequence[str],
    cfg: DistillConfig,
) -> float:
    """The distillation loss (without hard labels) averaged over `texts`: how far the student still is."""
    student.eval()
    teacher.eval()
    total, n = 0.0, 0
    for start in range(0, len(texts), cfg.batch_size):
        chunk = texts[start : start + cfg.batch_size]
        device = next(student.parameters()).device
        batch = {k: v.to(device) for k, v in _tokenize(tokenizer, chunk, cfg.max_length).items()}
        loss = distillation_loss(
            model_output(student, batch, kind), model_output(teacher, batch, kind), kind, cfg.temperature
        )
        total += float(loss) * len(chunk)
        n += len(chunk)
    return total / max(n, 1)


def recover_by_distillation(
    student: nn.Module,
    teacher: nn.Module,
    kind: ModelKind,
    tokenizer: Any,
    texts: list[str],
    cfg: DistillConfig,
    labels: list[int] | None = None,
) -> nn.Module:
    """Trains `student` in place to reproduce `teacher` on `texts`; returns it in eval mode."""
    if not texts:
        raise DataError("distillation needs at least one text")
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels for {len(texts)} texts")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    texts = texts[: cfg.max_texts]
    label_tensor = torch.tensor(labels[: len(texts)]) if labels is not None else None

    device = next(student.parameters()).device  # the teacher must be on the same device
    teacher.eval()
    teacher_grad = [p.requires_grad for p in teacher.parameters()]
    for p in teacher.parameters():
        p.requires_grad_(False)
    frozen = _word_embeddings(student) if cfg.freeze_word_embeddings else None
    if frozen is not None:
        frozen.requires_grad_(False)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    lengths = [len(t) for t in texts]
    steps = -(-len(texts) // cfg.batch_size) * cfg.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, steps // 20)) * max(0.0, 1 - step / steps)
    )
    n_states = len(encoder_layers(_hf_model(student))) + 1 if cfg.hidden_loss_weight > 0 else 0
    kept = KeptTargets(available_memory_bytes() - MEMORY_RESERVE_BYTES if cfg.epochs > 1 else 0)
    student.train(cfg.dropout)  # BERT's train mode only switches dropout on
    with tqdm(total=steps, desc=f"distill ({kind})", unit="step") as bar:
        for epoch in range(cfg.epochs):
            for idx in length_grouped_batches(lengths, cfg.batch_size, rng):
                batch = _tokenize(tokenizer, [texts[i] for i in idx], cfg.max_length)
                batch = {k: v.to(device) for k, v in batch.items()}
                targets = kept.lookup(idx, batch["attention_mask"])
                if targets is None:
                    with mixed_precision():
                        targets = teacher_targets(teacher, batch, kind, n_states)
                    kept.store(idx, batch, targets)
                with mixed_precision(), student_attention():
                    loss = _training_loss(
                        student,
                        batch,
                        kind,
                        cfg,
                        label_tensor[idx].to(device) if label_tensor is not None else None,
                        targets,
                    )
                optimizer_step(loss, params, optimizer, schedule, bar)
            if epoch == 0:
                kept.report()
    if frozen is not None:
        frozen.requires_grad_(True)
    for p, wanted in zip(teacher.parameters(), teacher_grad, strict=True):
        p.requires_grad_(wanted)
    return student.eval()


def student_attention() -> AbstractContextManager[None]:
    """Runs the student's scaled-dot-product attention through the plain math kernel. Without dropout PyTorch
    picks its CPU flash kernel, whose backward at BERT's head sizes is slower than autograd through the math:
    on the default sentiment student (4 layers, 6 heads of 32) its distillation took 7-17 % longer with it
    (docs/conversion.md#training-precision). With dropout the math kernel is what PyTorch picks anyway. The
    teacher's forward keeps the flash kernel, the faster one there."""
    return sdpa_kernel([SDPBackend.MATH])


def _training_loss(
    student: nn.Module,
    batch: dict[str, torch.Tensor],
    kind: ModelKind,
    cfg: DistillConfig,
    labels: torch.Tensor | None,
    targets: tuple[torch.Tensor, list[torch.Tensor] | None],
) -> torch.Tensor:
    target, target_hidden = targets
    if target_hidden is None:
        output = model_output(student, batch, kind)
        return distillation_loss(output, target, kind, cfg.temperature, labels, cfg.hard_label_weight)
    output, hidden = outputs_and_hidden(student, batch, kind)
    loss = distillation_loss(output, target, kind, cfg.temperature, labels, cfg.hard_label_weight)
    return loss + cfg.hidden_loss_weight * hidden_state_loss(hidden, target_hidden, batch["attention_mask"])


# Left free for the rest of the process (models, optimizer, batches) when teacher outputs are kept.
MEMORY_RESERVE_BYTES = 2 << 30


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo (Linux); 0 where it cannot be read (nothing is kept then)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def teacher_targets(
    teacher: nn.Module, batch: dict[str, torch.Tensor], kind: ModelKind, n_states: int
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """The teacher's outputs and (with a hidden-state loss) the `n_states` hidden states the student's
    imitate, rounded to fp16 whether or not they are kept (`KeptTargets`): a build without the memory to
    keep them trains on targets of the same precision."""
    with torch.no_grad():
        if n_states == 0:
            return _fp16(model_output(teacher, batch, kind)), None
        output, hidden = outputs_and_hidden(teacher, batch, kind)
        matched = [hidden[0]] + [hidden[t + 1] for t in layer_map(n_states - 1, len(hidden) - 1)]
        return _fp16(output), [_fp16(h) for h in matched]


def _fp16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).float()


class KeptTargets:
    """The teacher's targets of each training text, from the first epoch, for the later ones: the teacher's
    forward pass is about a third of a distillation step. Hidden states are kept for the text's own tokens
    only (fp16), until `budget_bytes` would be exceeded; then everything is dropped and later epochs run
    the teacher again."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.given_up = budget_bytes <= 0
        self._rows: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}

    def lookup(
        self, idx: Sequence[int], attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None] | None:
        """The kept targets of the texts `idx`, padded as `attention_mask` says; None unless all are kept."""
        if self.given_up or any(i not in self._rows for i in idx):
            return None
        rows = [self._rows[i] for i in idx]
        outputs = torch.stack([r[0] for r in rows]).float()
        if not rows[0][1]:
            return outputs, None
        real = attention_mask.bool()
        hidden = []
        for k, first in enumerate(rows[0][1]):
            states = torch.zeros(*real.shape, first.shape[-1], device=attention_mask.device)
            states[real] = torch.cat([r[1][k] for r in rows]).float()
            hidden.append(states)
        return outputs, hidden

    def store(
        self,
        idx: Sequence[int],
        batch: dict[str, torch.Tensor],
        targets: tuple[torch.Tensor, list[torch.Tensor] | None],
    ) -> None:
        """Keeps `targets` (of the texts `idx`, in `batch`) while the budget allows."""
        if self.given_up:
            return
        output, hidden = targets
        real = batch["attention_mask"].bool()
        lengths = real.sum(dim=1).tolist()
        per_state = [torch.split(h[real].to(torch.float16), lengths) for h in hidden or []]
        outputs = output.to(torch.float16)
        size = outputs.numel() * 2 + sum(sum(lengths) * h.shape[-1] * 2 for h in hidden or [])
        if self.used_bytes + size > self.budget_bytes:
            print(
                f"teacher outputs no longer kept: over {self.budget_bytes / 2**30:.1f} GiB of free memory; "
                "later epochs run the teacher again",
                flush=True,
            )
            self.given_up = True
            self._rows.clear()
            return
        self.used_bytes += size
        for row, i in enumerate(idx):
            self._rows[i] = (outputs[row], [states[row] for states in per_state])

    def report(self) -> None:
        if self._rows:
            print(
                f"teacher outputs of {len(self._rows)} texts kept for the next epochs "
                f"({self.used_bytes / 2**30:.2f} GiB)",
                flush=True,
            )


def _word_embeddings(model: nn.Module) -> torch.Tensor | None:
    inner = getattr(model, "model", model)  # conversion.modeling.InferenceModule wraps the HF model
    get = getattr(inner, "get_input_embeddings", None)
    if get is None:
        return None
    weight: torch.Tensor = get().weight
    return weight


def every_other_layer(num_layers: int) -> list[int]:
    """[1, 3, 5] of 6: keeps the top layer, whose output the head was trained on."""
    return list(range(num_layers - 1, -1, -2))[::-1]


def load_training_texts(cfg: DistillConfig) -> tuple[list[str], list[int]]:
    from conversion.finetune import DEFAULT_LABELS, read_training_data

    data, _ = read_training_data(cfg.training_data(), DEFAULT_LABELS)
    order = list(range(len(data.texts)))
    random.Random(cfg.seed).shuffle(order)
    order = order[: cfg.max_texts]
    return [data.texts[i] for i in order], [data.labels[i] for i in order]


def pytorch_latency_ms(model: nn.Module, tokenizer: Any, batch_size: int = 8, seq: int = 64) -> float:
    """Median latency of one forward pass on a batch of `batch_size` sequences of `seq` tokens."""
    ids = torch.randint(1, len(tokenizer), (batch_size, seq), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "token_type_ids" in tokenizer.model_input_names:
        batch["token_type_ids"] = torch.zeros_like(ids)
    times = []
    model.eval()
    with torch.no_grad():
        for _ in range(7):
            start = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - start)
    return sorted(times[2:])[len(times[2:]) // 2] * 1000


def distill_checkpoint(
    teacher_dir: Path,
    out_dir: Path,
    cfg: DistillConfig,
    student_layers: list[int] | None = None,
    kind: ModelKind = "sequence-classification",
) -> Path:
    """Builds a student keeping `student_layers` of the teacher (default: every other one), initialised
    from the teacher's weights, distils it on real training texts, and saves an HF checkpoint."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from conversion.checkpoint import check_checkpoint_dir
    from conversion.checkpoint_dir import check_replaceable, describe_input, save_trained_checkpoint
    from conversion.finetune import describe_training_data
    from conversion.prune import count_parameters, drop_layers

    cfg.training_data()  # refuses validation sets before anything is loaded
    check_checkpoint_dir(teacher_dir)
    check_replaceable(out_dir)
    torch.set_num_threads(cfg.threads)
    common: dict[str, Any] = {"local_files_only": True, "use_safetensors": True, "trust_remote_code": False}
    teacher: nn.Module
    if kind == "bi-encoder":
        teacher = AutoModel.from_pretrained(teacher_dir, add_pooling_layer=False, **common)
    else:
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, **common)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir, **common)  # type: ignore[no-untyped-call]
    n_layers = len(encoder_layers(teacher))
    keep = sorted(set(student_layers if student_layers is not None else every_other_layer(n_layers)))
    student = drop_layers(copy.deepcopy(teacher), [i for i in range(n_layers) if i not in keep])

    texts, labels = load_training_texts(cfg)
    print(f"student keeps layers {keep} of {n_layers}; distilling on {len(texts)} texts")
    started = time.perf_counter()
    recover_by_distillation(
        student, teacher, kind, tokenizer, texts, cfg, labels if cfg.hard_label_weight > 0 else None
    )
    print(f"distillation took {time.perf_counter() - started:.0f} s")
    trained = {
        "trained_by": "distill",
        "settings": cfg.model_dump(mode="json"),
        "kind": kind,
        "student_layers": keep,
        "teacher": describe_input(teacher_dir),
        "data": describe_training_data(cfg.training_data()),
    }
    save_trained_checkpoint(out_dir, student, tokenizer, trained)
    report_teacher_vs_student(teacher, student, tokenizer, kind, cfg.max_length)
    n_teacher, n_student = count_parameters(teacher), count_parameters(student)
    print(f"params: teacher {n_teacher / 1e6:.2f}M, student {n_student / 1e6:.2f}M")
    return out_dir


def report_teacher_vs_student(
    teacher: nn.Module, student: nn.Module, tokenizer: Any, kind: ModelKind, max_length: int
) -> None:
    """Prints accuracy on sst2_validation (classifiers) and a quick PyTorch latency of both."""
    lat_t = pytorch_latency_ms(teacher, tokenizer)
    lat_s = pytorch_latency_ms(student, tokenizer)
    print(f"pytorch latency b8 x s64: teacher {lat_t:.1f} ms, student {lat_s:.1f} ms ({lat_t / lat_s:.2f}x)")
    if kind != "sequence-classification":
        return
    from conversion.data.sentiment import load_sentiment
    from conversion.finetune import LabelledTexts, evaluate_classifier

    val = load_sentiment("sst2_validation")
    data = LabelledTexts(val.texts, val.labels)
    n_labels = int(getattr(teacher, "num_labels", 2))
    for who, model in (("teacher", teacher), ("student", student)):
        acc, f1 = evaluate_classifier(model, tokenizer, data, max_length * 2, n_labels)
        print(f"sst2_validation {who}: accuracy {acc:.4f}, macro-F1 {f1:.4f}")
