import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from conversion import distill
from conversion.checkpoint_dir import partial_dir, read_marker
from conversion.data import DataError
from conversion.data.sentiment import load_sentiment
from conversion.distill import (
    MEMORY_RESERVE_BYTES,
    DistillConfig,
    KeptTargets,
    distill_checkpoint,
    every_other_layer,
    hidden_state_loss,
    layer_map,
    load_training_texts,
    mean_distillation_loss,
    outputs_and_hidden,
    recover_by_distillation,
    teacher_targets,
)
from conversion.errors import RecipeError
from conversion.kinds import ModelKind
from conversion.prune import PruneConfig, drop_layers, encoder_layers, prune_model
from conversion.recipe import parse_recipe
from conversion.training import PRECISION_ENV, mixed_precision

from .compression_helpers import KIND_TEXTS, batches, load_hf, tokenizer_of

TRAIN_TEXTS = [f"{a} {b} {c}" for a in KIND_TEXTS[:4] for b in KIND_TEXTS[4:] for c in ("ok", "bad")]


def teacher_and_pruned_student(path: Path, kind: ModelKind, drop: list[int]) -> tuple[Any, Any, Any]:
    """A tiny teacher with text-dependent outputs, and a copy of it without layers `drop`, half its heads
    and half its FFN: (teacher, student, tokenizer)."""
    teacher, tok = load_hf(path, kind), tokenizer_of(path)
    # At BERT's initial scale (std 0.02) a random model answers almost the same for every text; a larger
    # scale gives the teacher text-dependent outputs, so there is something to learn.
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in teacher.parameters():
            if weight.ndim == 2:
                weight.normal_(0, 0.2)
    student = prune_model(
        drop_layers(copy.deepcopy(teacher), drop),
        PruneConfig(heads_keep_fraction=0.5, ffn_keep_fraction=0.5, importance_texts=8),
        batches(tok, KIND_TEXTS),
    )
    return teacher, student, tok


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", ["sequence-classification", "cross-encoder", "bi-encoder"])
def test_distillation_brings_a_pruned_student_closer_to_its_teacher(
    tiny_checkpoints: dict[str, Path], kind: ModelKind, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRECISION_ENV, precision)
    teacher, student, tok = teacher_and_pruned_student(tiny_checkpoints[kind], kind, drop=[0])
    cfg = DistillConfig(max_texts=len(TRAIN_TEXTS), epochs=3, batch_size=8, lr=3e-3, temperature=1.0)
    before = mean_distillation_loss(student, teacher, kind, tok, TRAIN_TEXTS, cfg)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}

    recover_by_distillation(student, teacher, kind, tok, TRAIN_TEXTS, cfg)

    after = mean_distillation_loss(student, teacher, kind, tok, TRAIN_TEXTS, cfg)
    assert after < 0.7 * before
    assert not student.training
    for name, value in teacher.state_dict().items():  # the teacher is never trained
        assert torch.equal(value, teacher_state[name])


@pytest.mark.parametrize("dropout", [True, False])
def test_the_student_trains_with_or_without_dropout_as_configured(
    tiny_checkpoints: dict[str, Path], dropout: bool
) -> None:
    kind: ModelKind = "sequence-classification"
    teacher, student, tok = teacher_and_pruned_student(tiny_checkpoints[kind], kind, drop=[])
    dropout_modes: list[bool] = []
    for module in student.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda m, *_: dropout_modes.append(m.training))
    cfg = DistillConfig(max_texts=8, batch_size=8, dropout=dropout)

    recover_by_distillation(student, teacher, kind, tok, TRAIN_TEXTS, cfg)

    assert dropout_modes
    assert set(dropout_modes) == {dropout}
    assert not student.training


def test_distill_checkpoint_writes_a_reloadable_smaller_student(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    train = tmp_path / "train.tsv"
    train.write_text(
        "text\tlabel\n" + "".join(f"{t}\t{i % 2}\n" for i, t in enumerate(TRAIN_TEXTS)), encoding="utf-8"
    )
    cfg = DistillConfig(train_tsv=train, max_texts=16, batch_size=8, hard_label_weight=0.5)
    out = distill_checkpoint(tiny_checkpoints["sequence-classification"], tmp_path / "student", cfg, [1])
    student = load_hf(out, "sequence-classification")
    assert student.config.num_hidden_layers == 1
    assert len(encoder_layers(student)) == 1
    assert student.config.id2label == {0: "negative", 1: "positive"}
    assert (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()
    marker = read_marker(out)
    assert marker is not None
    assert (marker["trained_by"], marker["kind"], marker["student_layers"]) == (
        "distill",
        "sequence-classification",
        [1],
    )
    assert marker["settings"] == cfg.model_dump(mode="json")
    assert not partial_dir(out).exists()


def test_validation_sets_are_never_distilled_on(tmp_path: Path) -> None:
    for name in ("sst2_validation", "amazon_multidomain_validation"):
        path = tmp_path / f"{name}.tsv"
        path.write_text("text\tlabel\ngood\t1\n", encoding="utf-8")
        with pytest.raises(DataError, match="validation set"):
            DistillConfig(train_tsv=path).training_data()
    with pytest.raises(ValidationError, match="amazon_multidomain_validation"):
        DistillConfig.model_validate({"mix": {"sets": {"amazon_multidomain_validation": 10}}})
    with pytest.raises(ValidationError, match="not both"):
        DistillConfig.model_validate({"train_tsv": str(path), "mix": {"sets": {"sst2_train": 10}}})


def test_distillation_texts_come_from_a_training_mix() -> None:
    cfg = DistillConfig.model_validate(
        {"mix": {"sets": {"sst2_train": 40, "amazon_sandisk": 20}}, "max_texts": 50}
    )
    texts, labels = load_training_texts(cfg)
    assert len(texts) == len(labels) == 50
    sandisk = set(load_sentiment("amazon_sandisk").texts)
    assert 0 < sum(t in sandisk for t in texts) <= 20


def _teacher_rows(teacher: torch.nn.Module) -> list[int]:
    """Counts the texts the teacher reads, from a forward hook on its embeddings."""
    rows: list[int] = []
    embeddings = teacher.get_input_embeddings()  # type: ignore[operator]
    embeddings.register_forward_hook(lambda _m, args, _out: rows.append(int(args[0].shape[0])))
    return rows


@pytest.mark.parametrize("hidden_loss_weight", [0.0, 1.0])
def test_kept_targets_are_the_teachers_in_another_batching(
    tiny_checkpoints: dict[str, Path], hidden_loss_weight: float
) -> None:
    """The second epoch batches texts differently (other neighbours, other padding): what was kept from the
    first must be what the teacher says of each text there, on its own tokens."""
    kind: ModelKind = "sequence-classification"
    teacher, _, tok = teacher_and_pruned_student(tiny_checkpoints[kind], kind, drop=[0])
    n_states = 2 if hidden_loss_weight else 0  # the student: embeddings + 1 layer
    texts = TRAIN_TEXTS[:8]
    kept = KeptTargets(budget_bytes=1 << 30)
    for first in (list(range(0, 8, 2)), list(range(1, 8, 2))):
        batch = dict(tok([texts[i] for i in first], padding=True, return_tensors="pt"))
        kept.store(first, batch, teacher_targets(teacher, batch, kind, n_states))
    again = [7, 0, 3, 2]
    batch = dict(tok([texts[i] for i in again], padding=True, return_tensors="pt"))
    looked_up = kept.lookup(again, batch["attention_mask"])
    assert looked_up is not None
    expected = teacher_targets(teacher, batch, kind, n_states)
    assert torch.allclose(looked_up[0], expected[0], atol=1e-3)
    if not hidden_loss_weight:
        assert looked_up[1] is None
        assert expected[1] is None
        return
    assert looked_up[1] is not None
    assert expected[1] is not None
    assert len(looked_up[1]) == n_states
    real = batch["attention_mask"].bool()
    for kept_states, fresh in zip(looked_up[1], expected[1], strict=True):
        assert kept_states.shape == fresh.shape
        assert torch.allclose(kept_states[real], fresh[real], atol=1e-2)
        assert float(kept_states[~real].abs().sum()) == 0.0
    assert kept.lookup([0, 99], batch["attention_mask"][:2]) is None  # text 99 was never stored


def test_the_teacher_reads_each_text_once_when_its_outputs_fit(tiny_checkpoints: dict[str, Path]) -> None:
    kind: ModelKind = "sequence-classification"
    teacher, student, tok = teacher_and_pruned_student(tiny_checkpoints[kind], kind, drop=[0])
    rows = _teacher_rows(teacher)
    cfg = DistillConfig(max_texts=len(TRAIN_TEXTS), epochs=3, batch_size=8, hidden_loss_weight=1.0)

    recover_by_distillation(student, teacher, kind, tok, TRAIN_TEXTS, cfg)

    assert sum(rows) == len(TRAIN_TEXTS)


def test_without_the_memory_the_teacher_runs_every_epoch(
    tiny_checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kind: ModelKind = "sequence-classification"
    teacher, student, tok = teacher_and_pruned_student(tiny_checkpoints[kind], kind, drop=[0])
    rows = _teacher_rows(teacher)
    monkeypatch.setattr(distill, "available_memory_bytes", lambda: MEMORY_RESERVE_BYTES + 20_000)
    cfg = DistillConfig(max_texts=len(TRAIN_TEXTS), epochs=2, batch_size=8, hidden_loss_weight=1.0)

    recover_by_distillation(student, teacher, kind, tok, TRAIN_TEXTS, cfg)

    assert sum(rows) == 2 * len(TRAIN_TEXTS)
    assert "teacher outputs no longer kept" in capsys.readouterr().out


def test_every_other_layer_keeps_the_top_one() -> None:
    assert every_other_layer(6) == [1, 3, 5]
    assert every_other_layer(5) == [0, 2, 4]
    assert every_other_layer(1) == [0]


def _mean_hidden_loss(
    student: torch.nn.Module, teacher: torch.nn.Module, kind: ModelKind, tok: Any, texts: list[str]
) -> float:
    student.eval()
    losses = []
    with torch.no_grad():
        for batch in batches(tok, texts, 8):
            _, hidden = outputs_and_hidden(student, batch, kind)
            _, target = outputs_and_hidden(teacher, batch, kind)
            losses.append(float(hidden_state_loss(hidden, target, batch["attention_mask"])))
    return sum(losses) / len(losses)


@pytest.mark.parametrize(
    ("kind", "drop"),
    [("sequence-classification", []), ("bi-encoder", []), ("sequence-classification", [0])],
)
def test_the_hidden_state_loss_brings_every_layer_closer_to_the_teacher(
    tiny_checkpoints: dict[str, Path], kind: ModelKind, drop: list[int]
) -> None:
    teacher, student, tok = teacher_and_pruned_student(tiny_checkpoints[kind], kind, drop)
    cfg = DistillConfig(
        max_texts=len(TRAIN_TEXTS), epochs=3, batch_size=8, lr=3e-3, temperature=1.0, hidden_loss_weight=1.0
    )
    before = _mean_hidden_loss(student, teacher, kind, tok, TRAIN_TEXTS)
    output_before = mean_distillation_loss(student, teacher, kind, tok, TRAIN_TEXTS, cfg)

    recover_by_distillation(student, teacher, kind, tok, TRAIN_TEXTS, cfg)

    assert _mean_hidden_loss(student, teacher, kind, tok, TRAIN_TEXTS) < 0.7 * before
    assert mean_distillation_loss(student, teacher, kind, tok, TRAIN_TEXTS, cfg) < output_before
    assert not student.training


def test_the_hidden_state_loss_reads_through_the_inference_wrapper(loaded_sentiment: Any) -> None:
    """compress() distils conversion.modeling.InferenceModule; its hidden states are the HF model's."""
    tok = loaded_sentiment.tokenizer
    batch = batches(tok, KIND_TEXTS, 8)[0]
    with torch.no_grad():
        logits, hidden = outputs_and_hidden(loaded_sentiment.module, batch, "sequence-classification")
        expected = loaded_sentiment.module(**batch)
    assert torch.allclose(logits, expected, atol=1e-5)
    n_layers = loaded_sentiment.module.model.config.num_hidden_layers
    assert len(hidden) == n_layers + 1
    zero = hidden_state_loss(hidden, hidden, batch["attention_mask"])
    assert float(zero) == 0.0


def test_padding_does_not_count_in_the_hidden_state_loss() -> None:
    student = (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    teacher = (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))
    teacher[1][0, 2] = 100.0  # the padded position
    mask = torch.tensor([[1, 1, 0]])
    assert float(hidden_state_loss(student, teacher, mask)) == 0.0
    teacher[1][0, 0] = 2.0
    # (2^2 * 4 values) / (2 tokens * 4 values), averaged over embeddings + 1 layer
    assert float(hidden_state_loss(student, teacher, mask)) == pytest.approx(1.0)


def test_hidden_sizes_must_match() -> None:
    with pytest.raises(ValueError, match="hidden sizes differ"):
        hidden_state_loss((torch.zeros(1, 2, 4),), (torch.zeros(1, 2, 8),), torch.ones(1, 2))


def test_student_layers_imitate_evenly_spaced_teacher_layers() -> None:
    assert layer_map(6, 6) == [0, 1, 2, 3, 4, 5]
    assert layer_map(3, 6) == [1, 3, 5]
    assert layer_map(2, 6) == [2, 5]
    assert layer_map(1, 4) == [3]
    with pytest.raises(ValueError, match="cannot imitate"):
        layer_map(7, 6)


def test_hidden_loss_weight_is_configured_from_the_recipe() -> None:
    assert DistillConfig().hidden_loss_weight == 0.0  # existing recipes train as before
    with pytest.raises(ValidationError):
        DistillConfig(hidden_loss_weight=-0.5)
    with pytest.raises(ValidationError):
        DistillConfig.model_validate({"hidden_weight": 1.0})
    data: dict[str, Any] = {
        "name": "review-sentiment",
        "source": "checkpoints/x",
        "kind": "sequence-classification",
        "labels": ["negative", "positive"],
        "prune": {"heads_keep_fraction": 0.5},
        "distill": {"hidden_loss_weight": 2.0, "max_texts": 16},
    }
    recipe = parse_recipe(data)
    assert recipe.distill is not None
    assert recipe.distill.hidden_loss_weight == 2.0
    data["distill"]["hidden_loss_weight"] = -1
    with pytest.raises(RecipeError, match="hidden_loss_weight"):
        parse_recipe(data)


def _backward_node_names(loss: torch.Tensor) -> set[str]:
    names: set[str] = set()
    stack = [loss.grad_fn]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names.add(node.name())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


@pytest.mark.parametrize("dropout", [True, False])
def test_the_students_attention_never_backpropagates_through_the_flash_kernel(
    tiny_checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch, dropout: bool
) -> None:
    kind: ModelKind = "sequence-classification"
    teacher, student, tok = teacher_and_pruned_student(tiny_checkpoints[kind], kind, drop=[0])
    assert student.config._attn_implementation == "sdpa"
    graphs: list[set[str]] = []
    step = distill.optimizer_step

    def recording_step(loss: torch.Tensor, *args: Any) -> None:
        graphs.append(_backward_node_names(loss))
        step(loss, *args)

    monkeypatch.setattr(distill, "optimizer_step", recording_step)
    cfg = DistillConfig(max_texts=8, batch_size=8, dropout=dropout, hidden_loss_weight=1.0)

    recover_by_distillation(student, teacher, kind, tok, TRAIN_TEXTS, cfg)

    assert graphs
    for names in graphs:
        assert "SafeSoftmaxBackward0" in names  # attention through the math kernel
        assert not any("Flash" in name for name in names)
    with mixed_precision():  # outside it, the same student's attention takes the flash kernel
        plain = outputs_and_hidden(student, batches(tok, KIND_TEXTS[:4])[0], kind)
    assert any("Flash" in name for name in _backward_node_names(plain[0].float().sum()))
