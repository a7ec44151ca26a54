from pathlib import Path

import pytest

from conversion.errors import RecipeError
from conversion.recipe import load_recipe, parse_recipe

RECIPES = Path(__file__).resolve().parents[2] / "model_store" / "recipes"


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_repository_recipes_parse(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name in {"product-embedder", "product-recommender", "product-reranker", "review-sentiment"}


def test_defaults_and_precision() -> None:
    recipe = parse_recipe({"name": "m", "source": "x", "kind": "bi-encoder"})
    assert recipe.quantize.method == "dynamic"
    assert recipe.quantize.precision == "int8"
    assert recipe.validation.sentiment.accuracy_drop_budget == 1.0
    assert recipe.validation.ranking.ndcg_budget == 0.98
    assert recipe.parity.atol == 1e-4
    assert recipe.benchmark.threads == 1


def test_the_default_sentiment_recipe_is_the_distilled_student_gated_on_every_set() -> None:
    from conversion.data.sentiment import VALIDATION_SETS

    student = load_recipe(RECIPES / "review-sentiment.yaml")
    plain = load_recipe(RECIPES / "review-sentiment.int8.yaml")
    assert student.source == plain.source == "checkpoints/review-sentiment-teacher"
    assert student.prune is not None
    assert student.distill is not None
    assert student.distill.mix is not None
    assert plain.prune is None
    assert plain.distill is None
    for recipe in (student, plain):
        gate = recipe.validation.sentiment
        assert list(gate.datasets) == list(VALIDATION_SETS)
        assert gate.accuracy_drop_budget == 1.0
        assert gate.min_balanced_accuracy == 70.0


def test_package_source_resolves_to_the_packaged_minilm() -> None:
    recipe = load_recipe(RECIPES / "product-embedder.yaml")
    assert (recipe.source_path() / "model.safetensors").is_file()


def test_relative_source_resolves_against_base(tmp_path: Path) -> None:
    recipe = parse_recipe({"name": "m", "source": "ckpt/a", "kind": "bi-encoder"})
    assert recipe.source_path(tmp_path) == tmp_path / "ckpt" / "a"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "m", "source": "x", "kind": "bi-encoder", "typo": 1}, "typo"),
        ({"name": "m", "source": "x", "kind": "regression"}, "kind"),
        ({"name": "Bad Name", "source": "x", "kind": "bi-encoder"}, "name"),
        (
            {"name": "m", "source": "x", "kind": "bi-encoder", "quantize": {"method": "fp16"}},
            "CUDAExecutionProvider",
        ),
        ({"name": "m", "source": "x", "kind": "bi-encoder", "labels": ["a", "b"]}, "labels"),
        (
            {
                "name": "m",
                "source": "x",
                "kind": "bi-encoder",
                "quantize": {"calibration_dataset": "sst2_validation"},
            },
            "calibration_dataset",
        ),
    ],
)
def test_bad_recipes_are_refused_with_the_field_named(data: dict[str, object], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(data)


def test_bad_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(bad)
