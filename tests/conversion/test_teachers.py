from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conversion import finetune
from conversion.checkpoint_dir import MARKER, is_complete, write_checkpoint
from conversion.data.sentiment import TrainingMix
from conversion.finetune import FinetuneConfig
from conversion.teachers import (
    PRODUCT_RECOMMENDER,
    SEARCH_ENCODER,
    SENTIMENT_TEACHER,
    TEACHERS,
    SearchEncoder,
    Teacher,
)
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
        checkpoint="checkpoints/t",
        about="a test teacher",
        mix=TrainingMix(sets={"sst2_train": 10}),
        settings=FinetuneConfig.model_validate({"max_length": 16}),
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

    changed = replace(teacher, settings=FinetuneConfig.model_validate({"max_length": 32}))
    changed.ensure(tmp_path)
    assert "was trained with other settings or data" in capsys.readouterr().err
    other_mix = replace(changed, mix=TrainingMix(sets={"sst2_train": 11}))
    other_mix.ensure(tmp_path)
    assert [cfg.max_length for _, cfg in runs] == [16, 16, 32, 32]
    assert runs[-1][0].sets == {"sst2_train": 11}


def test_the_recipes_name_the_trained_checkpoints() -> None:
    from conversion.cli import DEFAULT_MODELS, RECIPES_DIR
    from conversion.recipe import load_recipe

    recipes = [d.recipe for d in DEFAULT_MODELS] + [d.fallback for d in DEFAULT_MODELS if d.fallback]
    sources = {load_recipe(RECIPES_DIR / name).source for name in recipes}
    assert SENTIMENT_TEACHER.checkpoint in sources
    assert TEACHERS[SENTIMENT_TEACHER.checkpoint] is SENTIMENT_TEACHER
    assert load_recipe(RECIPES_DIR / "product-embedder.search.yaml").source == SEARCH_ENCODER.checkpoint
    assert TEACHERS[SEARCH_ENCODER.checkpoint] is SEARCH_ENCODER
    recommender = load_recipe(RECIPES_DIR / "product-recommender.yaml")
    assert recommender.source in sources
    assert TEACHERS[recommender.source] is PRODUCT_RECOMMENDER
    # The user tower the service applies is the one the model was trained with.
    assert recommender.user_tower.recency_half_life == PRODUCT_RECOMMENDER.settings.recency_half_life
    assert set(SENTIMENT_TEACHER.mix.sets) == {
        "sst2_train",
        "amazon_multidomain_train",
        "amazon_earphones",
        "amazon_sandisk",
    }


def test_the_search_encoder_is_reused_only_when_trained_with_its_settings() -> None:
    from conversion.contrastive import ContrastiveConfig

    encoder = SearchEncoder(checkpoint="checkpoints/s", about="a test encoder", settings=ContrastiveConfig())
    settings = encoder.settings.model_dump(mode="json")
    assert encoder.trained_as_wanted({"trained_by": "contrastive", "settings": settings})
    assert not encoder.trained_as_wanted({"trained_by": "finetune", "settings": settings})
    other = ContrastiveConfig(lr=1e-3).model_dump(mode="json")
    assert not encoder.trained_as_wanted({"trained_by": "contrastive", "settings": other})


def test_cli_build_trains_a_missing_source_before_building(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import yaml

    from conversion import cli, teachers
    from conversion.contrastive import ContrastiveConfig
    from conversion.tiny import tiny_recipe_data

    trained: list[Path] = []

    class CopiedEncoder(SearchEncoder):
        def train(self, base: Path, out: Path) -> Path:  # the tiny encoder stands in for a fine-tune
            settings = {"trained_by": "contrastive", "settings": self.settings.model_dump(mode="json")}
            trained.append(out)
            return write_checkpoint(
                out,
                settings,
                lambda f: shutil.copytree(tiny_checkpoints["bi-encoder"], f, dirs_exist_ok=True),
            )

    encoder = CopiedEncoder(
        checkpoint="checkpoints/search", about="a test encoder", settings=ContrastiveConfig()
    )
    monkeypatch.setattr(teachers, "TEACHERS", {encoder.checkpoint: encoder})
    monkeypatch.setattr(cli, "REPO_ROOT", tmp_path)
    data = tiny_recipe_data("bi-encoder", tmp_path / encoder.checkpoint)
    data["source"] = encoder.checkpoint
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)  # the recipe's relative source resolves against the working folder

    assert cli.main(["build", "--recipe", str(recipe), "--store", str(tmp_path / "store")]) == 0
    assert trained == [tmp_path / "checkpoints" / "search"]
    assert (tmp_path / "store" / "product-embedder" / "1" / "model.onnx").is_file()
    assert cli.main(["build", "--recipe", str(recipe), "--store", str(tmp_path / "store")]) == 0
    assert len(trained) == 1  # complete and trained as wanted: reused
