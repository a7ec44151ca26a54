import json
from pathlib import Path
from typing import Any

from bench.variants import built_from, compression_settings, pick_sentiment, plan_variants, read_artifacts


def publish(store: Path, name: str, version: str, precision: str, **extra: Any) -> None:
    folder = store / name / version
    folder.mkdir(parents=True)
    task = "embedding" if name == "product-embedder" else "sentiment"
    manifest = {
        "name": name,
        "version": version,
        "task": task,
        "precision": precision,
        "execution_providers": ["CPUExecutionProvider"],
        "recipe": {},
        "source": {"path": "ckpt"},
    }
    manifest.update(extra)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def bench_rows(sps: float) -> dict[str, Any]:
    return {"results": [{"batch_size": 1, "sequence_length": 16, "sequences_per_s": sps}]}


def test_picks_fp32_dynamic_int8_and_fastest_compressed(tmp_path: Path) -> None:
    publish(tmp_path, "review-sentiment", "1", "int8", recipe={"quantize": {"method": "dynamic"}})
    publish(tmp_path, "review-sentiment", "2", "fp32", recipe={"quantize": {"method": "none"}})
    publish(tmp_path, "review-sentiment", "3", "int8", recipe={"quantize": {"method": "static"}})
    publish(tmp_path, "review-sentiment", "4", "fp16", execution_providers=["CUDAExecutionProvider"])
    publish(
        tmp_path,
        "review-sentiment",
        "5",
        "int8",
        source={"path": "checkpoints/sentiment-distilled"},
        benchmark=bench_rows(900.0),
    )
    publish(
        tmp_path,
        "review-sentiment",
        "6",
        "int8",
        recipe={"prune": {"heads": 0.5}},
        benchmark=bench_rows(1200.0),
    )
    publish(
        tmp_path,
        "review-sentiment",
        "7",
        "int8",
        recipe={"prune": {"heads": 0.25}},
        validation={"passed": False},
        benchmark=bench_rows(5000.0),
    )
    picked = pick_sentiment(read_artifacts(tmp_path))
    assert picked["fp32"] is not None
    assert picked["fp32"].version == "2"
    assert picked["int8"] is not None
    assert picked["int8"].version == "1"
    assert picked["pruned-int8"] is not None
    assert picked["pruned-int8"].version == "6"


def test_prefers_the_builds_of_the_current_pruned_recipe(tmp_path: Path) -> None:
    store, recipe = tmp_path / "store", tmp_path / "pruned.yaml"
    stale = {"prune": {"drop_layers": [1, 4]}, "distill": {"hard_label_weight": 0.0}}
    current = {"prune": {"drop_layers": [1, 4]}, "distill": {"hard_label_weight": 0.5}}
    publish(store, "review-sentiment", "1", "int8", recipe=stale, benchmark=bench_rows(2500.0))
    publish(store, "review-sentiment", "2", "int8", recipe=current, benchmark=bench_rows(2400.0))
    artifacts = read_artifacts(store)
    recipe.write_text("prune:\n  drop_layers: [1, 4]\ndistill:\n  hard_label_weight: 0.5\n")

    assert pick_sentiment(artifacts)["pruned-int8"].version == "1"  # type: ignore[union-attr]
    assert pick_sentiment(artifacts, recipe)["pruned-int8"].version == "2"  # type: ignore[union-attr]
    recipe.write_text("prune:\n  drop_layers: [0, 2, 4]\n")  # built by nobody: the fastest of all
    assert pick_sentiment(artifacts, recipe)["pruned-int8"].version == "1"  # type: ignore[union-attr]


def test_a_recipe_matches_a_build_whose_manifest_adds_the_defaults_it_leaves_out(tmp_path: Path) -> None:
    store, recipe = tmp_path / "store", tmp_path / "pruned.yaml"
    mix = {"sets": {"sst2_train": 30000, "amazon_sandisk": 700}, "balance_classes": True, "seed": 0}
    publish(store, "review-sentiment", "1", "int8", recipe={"prune": {}, "distill": {"mix": mix, "lr": 3e-4}})
    recipe.write_text("distill:\n  mix:\n    sets:\n      sst2_train: 30000\n      amazon_sandisk: 700\n")
    settings = compression_settings(recipe)
    assert built_from(read_artifacts(store)[0], settings)
    recipe.write_text("distill:\n  mix:\n    sets:\n      sst2_train: 20000\n")
    assert not built_from(read_artifacts(store)[0], compression_settings(recipe))


def test_a_student_quantized_another_way_does_not_match_the_recipe(tmp_path: Path) -> None:
    store, recipe = tmp_path / "store", tmp_path / "pruned.yaml"
    old = {"method": "dynamic", "per_channel": True, "exclude_nodes": ["layer"], "smooth_ffn_inputs": None}
    publish(store, "review-sentiment", "1", "int8", recipe={"prune": {}, "quantize": old})
    recipe.write_text("prune: {}\nquantize:\n  method: dynamic\n  smooth_ffn_inputs:\n    alpha: 0.5\n")
    assert not built_from(read_artifacts(store)[0], compression_settings(recipe))
    recipe.write_text("prune: {}\nquantize:\n  method: dynamic\n")
    assert built_from(read_artifacts(store)[0], compression_settings(recipe))


def test_plan_gives_each_variant_a_store_of_its_own_models(tmp_path: Path) -> None:
    published, built = tmp_path / "model_store", tmp_path / "built"
    publish(published, "review-sentiment", "1", "int8")
    publish(published, "product-embedder", "1", "int8")
    publish(published, "product-embedder", "2", "int8", recipe={"prune": {"heads_keep_fraction": 0.5}})
    publish(built, "review-sentiment", "1", "fp32")
    (published / "review-sentiment" / ".tmp-x" / "manifest.json").parent.mkdir(parents=True)
    variants, skipped = plan_variants([published, built], tmp_path / "stores")
    assert [v.key for v in variants] == [
        "baseline",
        "fp32-batch",
        "fp32-nobatch",
        "int8-batch",
        "int8-nobatch",
    ]
    assert len(skipped) == 1
    assert "pruned" in skipped[0]
    fp32, int8 = variants[1], variants[3]
    assert fp32.env["INFERENCE_BATCHING"] == "true"
    assert variants[2].env["INFERENCE_BATCHING"] == "false"
    # no fp32 embedder anywhere: the fp32 row falls back to the plain (unpruned) int8 one
    assert fp32.env["INFERENCE_PINNED_VERSIONS"] == "review-sentiment=1,product-embedder=1"
    for variant in (fp32, int8):
        store = Path(variant.env["INFERENCE_MODEL_STORE"])
        assert sorted(p.relative_to(store).as_posix() for p in store.glob("*/*")) == [
            "product-embedder/1",
            "review-sentiment/1",
        ]
    fp32_manifest = json.loads(
        (Path(fp32.env["INFERENCE_MODEL_STORE"]) / "review-sentiment/1/manifest.json").read_text()
    )
    assert fp32_manifest["precision"] == "fp32"  # from the benchmark's own builds, not the published int8


def test_empty_or_missing_store_gives_only_the_baseline(tmp_path: Path) -> None:
    variants, skipped = plan_variants([tmp_path / "nothing"], tmp_path / "stores")
    assert [v.key for v in variants] == ["baseline"]
    assert len(skipped) == 3
