from pathlib import Path
from typing import Any

import pytest

from conversion import finetune
from conversion.checkpoint_dir import MARKER, is_complete, write_checkpoint
from conversion.data.sentiment import TrainingMix
from conversion.finetune import FinetuneConfig
from conversion.teachers import SENTIMENT_TEACHER, TEACHERS, Teacher
from conversion.tiny import make_tiny_checkpoint


def test_a_teacher_is_trained_again_unless_complete_and_trained_as_wanted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs: list[tuple[TrainingMix, FinetuneConfig]] = []

    def fake_finetune(base: Path, mix: Any, out_dir: Path, cfg: FinetuneConfig) -> Path:
        runs.append((mix, cfg))
        trained = {"settings": cfg.model_dump(mode="json"), "data": {"mix": mix.model_dump(mode="json")}}
        return write_checkpoint(
            out_dir, trained, lambda f: make_tiny_checkpoint(f, "sequence-classification")
        )

    monkeypatch.setattr(finetune, "finetune", fake_finetune)
    teacher = Teacher(
        "checkpoints/t",
        TrainingMix(sets={"sst2_train": 10}),
        FinetuneConfig.model_validate({"max_length": 16}),
        "a test teacher",
    )
    path = teacher.ensure(tmp_path)
    assert path == tmp_path / "checkpoints" / "t"
    assert "is missing" in capsys.readouterr().err
    assert is_complete(path)
    teacher.ensure(tmp_path)  # complete and trained as wanted: reused
    assert len(runs) == 1

    (path / MARKER).unlink()  # as an interrupted fine-tune leaves it
    teacher.ensure(tmp_path)
    assert f"is unfinished (no valid {MARKER})" in capsys.readouterr().err
    assert len(runs) == 2

    changed = Teacher(
        teacher.checkpoint, teacher.mix, FinetuneConfig.model_validate({"max_length": 32}), teacher.about
    )
    changed.ensure(tmp_path)
    assert "was trained with other settings or data" in capsys.readouterr().err
    other_mix = Teacher(teacher.checkpoint, TrainingMix(sets={"sst2_train": 11}), changed.settings, "")
    other_mix.ensure(tmp_path)
    assert [cfg.max_length for _, cfg in runs] == [16, 16, 32, 32]
    assert runs[-1][0].sets == {"sst2_train": 11}


def test_the_default_recipes_name_the_sentiment_teacher() -> None:
    from conversion.cli import DEFAULT_MODELS, RECIPES_DIR
    from conversion.recipe import load_recipe

    recipes = [d.recipe for d in DEFAULT_MODELS] + [d.fallback for d in DEFAULT_MODELS if d.fallback]
    sources = {load_recipe(RECIPES_DIR / name).source for name in recipes}
    assert SENTIMENT_TEACHER.checkpoint in sources
    assert TEACHERS[SENTIMENT_TEACHER.checkpoint] is SENTIMENT_TEACHER
    assert set(SENTIMENT_TEACHER.mix.sets) == {
        "sst2_train",
        "amazon_multidomain_train",
        "amazon_earphones",
        "amazon_sandisk",
    }
