import copy
from pathlib import Path

import pytest
import torch

from conversion.data import DataError
from conversion.distill import (
    DistillConfig,
    distill_checkpoint,
    every_other_layer,
    mean_distillation_loss,
    recover_by_distillation,
)
from conversion.kinds import ModelKind
from conversion.prune import PruneConfig, drop_layers, encoder_layers, prune_model

from .compression_helpers import KIND_TEXTS, batches, load_hf, tokenizer_of

TRAIN_TEXTS = [f"{a} {b} {c}" for a in KIND_TEXTS[:4] for b in KIND_TEXTS[4:] for c in ("ok", "bad")]


@pytest.mark.parametrize("kind", ["sequence-classification", "cross-encoder", "bi-encoder"])
def test_distillation_brings_a_pruned_student_closer_to_its_teacher(
    tiny_checkpoints: dict[str, Path], kind: ModelKind
) -> None:
    path = tiny_checkpoints[kind]
    teacher, tok = load_hf(path, kind), tokenizer_of(path)
    # At BERT's initial scale (std 0.02) a random model answers almost the same for every text; a larger
    # scale gives the teacher text-dependent outputs, so there is something to learn.
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in teacher.parameters():
            if weight.ndim == 2:
                weight.normal_(0, 0.2)
    student = prune_model(
        drop_layers(copy.deepcopy(teacher), [0]),
        PruneConfig(heads_keep_fraction=0.5, ffn_keep_fraction=0.5, importance_texts=8),
        batches(tok, KIND_TEXTS),
    )
    cfg = DistillConfig(max_texts=len(TRAIN_TEXTS), epochs=3, batch_size=8, lr=3e-3, temperature=1.0)
    before = mean_distillation_loss(student, teacher, kind, tok, TRAIN_TEXTS, cfg)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}

    recover_by_distillation(student, teacher, kind, tok, TRAIN_TEXTS, cfg)

    after = mean_distillation_loss(student, teacher, kind, tok, TRAIN_TEXTS, cfg)
    assert after < 0.7 * before
    assert not student.training
    for name, value in teacher.state_dict().items():  # the teacher is never trained
        assert torch.equal(value, teacher_state[name])


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


def test_validation_sets_are_never_distilled_on(tmp_path: Path) -> None:
    path = tmp_path / "sst2_validation.tsv"
    path.write_text("text\tlabel\ngood\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match="validation set"):
        DistillConfig(train_tsv=path).training_file()


def test_every_other_layer_keeps_the_top_one() -> None:
    assert every_other_layer(6) == [1, 3, 5]
    assert every_other_layer(5) == [0, 2, 4]
    assert every_other_layer(1) == [0]
