from pathlib import Path

from bench.prepare_store import fp32_recipe, prepare
from tests.bench.test_variants import publish


def test_fp32_recipe_drops_quantization_and_keeps_the_source() -> None:
    recipe = {
        "name": "product-embedder",
        "source": "package:x",
        "kind": "bi-encoder",
        "quantize": {"method": "dynamic", "exclude_nodes": ["a"]},
        "validation": {"ranking": {}},
    }
    out = fp32_recipe(recipe)
    assert out["quantize"] == {"method": "none"}
    assert out["validation"] == {"enabled": False}
    assert (out["name"], out["source"], out["kind"]) == ("product-embedder", "package:x", "bi-encoder")
    assert recipe["quantize"] == {"method": "dynamic", "exclude_nodes": ["a"]}  # input untouched


def test_prepare_reports_what_is_missing_without_building(tmp_path: Path) -> None:
    src, dst, recipes = tmp_path / "model_store", tmp_path / "built", tmp_path / "recipes"
    publish(src, "review-sentiment", "1", "int8")
    publish(src, "product-embedder", "1", "int8")
    recipes.mkdir()
    (recipes / "review-sentiment.fp32.yaml").write_text("name: review-sentiment\n")
    lines = prepare(src, dst, recipes, build_missing=False)
    assert lines == [
        "review-sentiment fp32: missing (build it without --no-build)",
        f"product-embedder fp32: no recipe at {recipes / 'product-embedder.fp32.yaml'} or "
        f"{recipes / 'product-embedder.yaml'}",
        f"review-sentiment pruned int8: no recipe at {recipes / 'review-sentiment.yaml'}",
    ]
    (recipes / "review-sentiment.yaml").write_text("name: review-sentiment\n")
    lines = prepare(src, dst, recipes, build_missing=False)
    assert lines[-1] == (
        "review-sentiment pruned int8: no build of review-sentiment.yaml (build it without --no-build)"
    )


def test_prepare_builds_the_plain_int8_teacher_when_the_store_has_only_the_student(tmp_path: Path) -> None:
    src, dst, recipes = tmp_path / "model_store", tmp_path / "built", tmp_path / "recipes"
    publish(src, "review-sentiment", "1", "int8", recipe={"prune": {"drop_layers": [1, 4]}})
    publish(dst, "review-sentiment", "1", "fp32")
    publish(dst, "product-embedder", "1", "fp32")
    recipes.mkdir()
    assert prepare(src, dst, recipes, build_missing=False) == [
        f"review-sentiment int8: no recipe at {recipes / 'review-sentiment.int8.yaml'}"
    ]
    (recipes / "review-sentiment.int8.yaml").write_text("name: review-sentiment\n")
    assert prepare(src, dst, recipes, build_missing=False) == [
        "review-sentiment int8: no build of review-sentiment.int8.yaml (build it without --no-build)"
    ]


def test_prepare_does_nothing_when_fp32_and_pruned_versions_exist(tmp_path: Path) -> None:
    src, dst = tmp_path / "model_store", tmp_path / "built"
    publish(src, "review-sentiment", "1", "int8")
    publish(dst, "review-sentiment", "1", "fp32")
    publish(dst, "product-embedder", "1", "fp32")
    publish(dst, "review-sentiment", "2", "int8", recipe={"prune": {"heads_keep_fraction": 0.5}})
    assert prepare(src, dst, tmp_path / "recipes", build_missing=False) == []


def test_prepare_rebuilds_the_pruned_variant_when_its_recipe_changed(tmp_path: Path) -> None:
    src, dst, recipes = tmp_path / "model_store", tmp_path / "built", tmp_path / "recipes"
    publish(src, "review-sentiment", "1", "int8")
    publish(dst, "review-sentiment", "1", "fp32")
    publish(dst, "product-embedder", "1", "fp32")
    old = {"prune": {"heads_keep_fraction": 0.75, "drop_layers": []}, "distill": {"lr": 0.0003, "epochs": 1}}
    publish(dst, "review-sentiment", "2", "int8", recipe=old)
    recipes.mkdir()
    recipe = recipes / "review-sentiment.yaml"
    recipe.write_text("name: review-sentiment\nprune:\n  heads_keep_fraction: 0.75\ndistill:\n  lr: 3.0e-4\n")
    assert prepare(src, dst, recipes, build_missing=False) == []

    recipe.write_text("name: review-sentiment\nprune:\n  heads_keep_fraction: 0.75\n  drop_layers: [1, 4]\n")
    assert prepare(src, dst, recipes, build_missing=False) == [
        "review-sentiment pruned int8: no build of review-sentiment.yaml (build it without --no-build)"
    ]
