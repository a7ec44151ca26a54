"""Pipeline and CLI end to end on tiny models: published versions; refusals leave the store as it was."""

import json
import re
import shutil
from pathlib import Path

import onnx
import pytest
import yaml

from conversion.cli import main
from conversion.hashing import sha256_dir
from conversion.optimize import op_counts
from conversion.tiny import tiny_recipe_data


def _snapshot(store: Path) -> list[str]:
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*"))


def _write_recipe(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def store(tiny_store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_store, tmp_path / "store"))


def test_manifest_follows_the_store_contract(tiny_store: Path, tiny_checkpoints: dict[str, Path]) -> None:
    version = tiny_store / "review-sentiment" / "1"
    m = json.loads((version / "manifest.json").read_text())
    assert m["schema_version"] == 1
    assert (m["task"], m["model_kind"], m["precision"]) == ("sentiment", "sequence-classification", "int8")
    assert (m["pooling"], m["normalize"], m["pooling_in_graph"]) == (None, False, False)
    assert m["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert (m["opset"], m["execution_providers"]) == (17, ["CPUExecutionProvider"])
    assert m["source"] == {
        "path": str(tiny_checkpoints["sequence-classification"]),
        "sha256": sha256_dir(tiny_checkpoints["sequence-classification"]),
    }
    assert m["recipe"]["name"] == "review-sentiment"
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(m["tool_versions"])
    assert m["validation"]["passed"] is True
    assert m["validation"]["parity"]["export"]["passed"] is True
    assert m["validation"]["parity"]["optimized"]["max_abs_diff"] < 1e-4
    assert {x["dataset"] for x in m["validation"]["metrics"]} == {
        "sst2_validation",
        "uci_amazon",
        "uci_yelp",
        "amazon_multidomain_validation",
    }
    assert set(m["validation"]["class_balance"]["uci_amazon"]) == {"negative", "positive"}
    assert m["versus_teacher"]["teacher"] == str(tiny_checkpoints["sequence-classification"])
    assert set(m["versus_teacher"]["deltas"]) == set(m["validation"]["class_balance"])
    assert m["optimization"]["fused_ops"]["Attention"] == 1  # the [CLS]-only last layer stays unfused
    # CPU artifacts: SkipLayerNormalization turned back into Add + LayerNormalization (conversion.optimize).
    assert m["optimization"]["skip_layernorm_unfused"] is True
    assert m["optimization"]["fused_ops"]["SkipLayerNormalization"] == 0
    assert op_counts(version / "model.onnx")["LayerNormalization"] == 4
    assert [(r["batch_size"], r["sequence_length"]) for r in m["benchmark"]["results"]] == [(1, 16), (4, 16)]
    assert m["size_bytes"] == (version / "model.onnx").stat().st_size < m["fp32_size_bytes"]
    assert op_counts(version / "model.onnx").get("MatMulIntegerToFloat", 0) > 0
    tokenizer = json.loads((version / "tokenizer.json").read_text())
    assert tokenizer["padding"] is None
    assert tokenizer["truncation"]["max_length"] == m["max_sequence_length"] == 64
    embedder = json.loads((tiny_store / "product-embedder" / "1" / "manifest.json").read_text())
    assert (embedder["labels"], embedder["pooling"], embedder["normalize"]) == (None, "mean", True)
    reranker = json.loads((tiny_store / "product-reranker" / "1" / "manifest.json").read_text())
    assert (reranker["task"], reranker["outputs"]) == ("ranking", ["logits"])
    graph = onnx.load(str(tiny_store / "product-reranker" / "1" / "model.onnx"))
    assert graph.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 1


def test_build_publishes_the_next_version(
    store: Path, tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    data = tiny_recipe_data("sequence-classification", tiny_checkpoints["sequence-classification"])
    data["quantize"] = {"method": "none"}
    assert (
        main(["build", "--recipe", str(_write_recipe(tmp_path / "r.yaml", data)), "--store", str(store)]) == 0
    )
    manifest = json.loads((store / "review-sentiment" / "2" / "manifest.json").read_text())
    assert (manifest["version"], manifest["precision"]) == ("2", "fp32")


@pytest.mark.parametrize("breakage", ["pickle", "truncated", "remote-code"])
def test_unsafe_or_broken_checkpoints_leave_the_store_untouched(
    store: Path,
    tiny_checkpoints: dict[str, Path],
    tmp_path: Path,
    breakage: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint = Path(shutil.copytree(tiny_checkpoints["sequence-classification"], tmp_path / "ckpt"))
    if breakage == "pickle":
        (checkpoint / "pytorch_model.bin").write_bytes(b"\x80\x04")
    elif breakage == "truncated":
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-64])
    else:
        config = json.loads((checkpoint / "config.json").read_text())
        (checkpoint / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
    before = _snapshot(store)
    recipe = _write_recipe(tmp_path / "r.yaml", tiny_recipe_data("sequence-classification", checkpoint))
    assert main(["build", "--recipe", str(recipe), "--store", str(store)]) == 1
    err = capsys.readouterr().err
    assert "error:" in err
    expected = {"pickle": "pytorch_model.bin", "truncated": "model.safetensors", "remote-code": "remote code"}
    assert expected[breakage] in err
    assert _snapshot(store) == before


def test_recipe_past_its_budget_is_refused_with_the_numbers(
    store: Path, tiny_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tiny_recipe_data("bi-encoder", tiny_checkpoints["bi-encoder"])
    data["quantize"] = {"method": "dynamic", "per_channel": False}
    data["validation"]["ranking"]["min_cosine_budget"] = 1.0  # type: ignore[index]
    before = _snapshot(store)
    assert (
        main(["build", "--recipe", str(_write_recipe(tmp_path / "r.yaml", data)), "--store", str(store)]) == 1
    )
    err = capsys.readouterr().err
    assert "past its budget on wands+pool cosine_mean" in err
    assert "nothing was published" in err
    assert "ndcg@10_vs_source" in err  # the whole table is printed
    assert _snapshot(store) == before


def test_list_validate_and_bench_on_published_versions(
    store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["list", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("review-sentiment", "product-embedder", "product-reranker"))
    assert "amazon_multidomain_validation accuracy" in out  # teacher -> artifact on every gate set
    assert main(["validate", "review-sentiment", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "uci_amazon" in out
    assert "PASSED" in out
    assert (
        main(
            [
                "bench",
                "product-embedder",
                "--store",
                str(store),
                "--batch-sizes",
                "2",
                "--sequence-lengths",
                "8",
                "--repeats",
                "2",
            ]
        )
        == 0
    )
    assert "speedup" in capsys.readouterr().out


def test_validate_refuses_a_tampered_version(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = store / "review-sentiment" / "1" / "model.onnx"
    model.write_bytes(model.read_bytes()[:-10])
    assert main(["validate", "review-sentiment", "--version", "1", "--store", str(store)]) == 1
    assert "sha256 does not match" in capsys.readouterr().err


def test_the_manifest_headline_is_the_worst_gate_set_and_the_speedup_over_the_teacher() -> None:
    from conversion.pipeline import versus_teacher
    from conversion.recipe import parse_recipe

    recipe = parse_recipe(tiny_recipe_data("sequence-classification", Path("checkpoints/t")))
    rows = [("a", "accuracy", 90.0, 90.5), ("b", "accuracy", 92.0, 91.2), ("b", "macro_f1", 92.0, 80.0)]
    validation = {"metrics": [{"dataset": d, "metric": m, "delta": a - s} for d, m, s, a in rows]}
    grid = [(1, 16, 5.0), (1, 64, 3.0), (8, 64, 2.5)]
    benchmark = {
        "source_runtime": "pytorch-fp32",
        "results": [{"batch_size": b, "sequence_length": s, "speedup_vs_source": x} for b, s, x in grid],
    }
    headline = versus_teacher(recipe, validation, benchmark)
    assert headline["teacher"] == "checkpoints/t"
    assert (headline["metric"], headline["worst_dataset"]) == ("accuracy", "b")
    assert headline["worst_delta"] == pytest.approx(-0.8)
    assert headline["deltas"] == {"a": 0.5, "b": pytest.approx(-0.8)}
    assert headline["speedup"] == {"batch1_seq64": 3.0, "batch8_seq64": 2.5}
    assert versus_teacher(recipe, {"metrics": []}, {"results": []})["worst_delta"] is None
    recommender = recipe.model_copy(
        update={"validation": recipe.validation.model_copy(update={"headline_metric": "macro_f1"})}
    )
    assert versus_teacher(recommender, validation, benchmark)["deltas"] == {"b": pytest.approx(-12.0)}


def test_build_defaults_skips_models_that_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    for name in ("product-embedder", "review-sentiment", "product-recommender", "product-reranker"):
        (store / name / "1").mkdir(parents=True)
    assert main(["build-defaults", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    for name in ("product-embedder", "review-sentiment", "product-recommender", "product-reranker"):
        assert f"{name}: version 1 exists" in out


def _default_recipes(folder: Path, checkpoints: dict[str, Path], student_floor: float | None) -> Path:
    """build-defaults' recipe files for tiny models: the sentiment default with balanced-accuracy floor
    `student_floor` and its fallback, which is built without per-channel scales."""
    folder.mkdir()
    embedder = tiny_recipe_data("bi-encoder", checkpoints["bi-encoder"], name="product-embedder")
    recommender = tiny_recipe_data("bi-encoder", checkpoints["bi-encoder"], name="product-recommender")
    reranker = tiny_recipe_data("cross-encoder", checkpoints["cross-encoder"], name="product-reranker")
    student = tiny_recipe_data(
        "sequence-classification", checkpoints["sequence-classification"], "review-sentiment"
    )
    student["validation"]["sentiment"]["min_balanced_accuracy"] = student_floor  # type: ignore[index]
    fallback = tiny_recipe_data(
        "sequence-classification", checkpoints["sequence-classification"], "review-sentiment"
    )
    fallback["quantize"] = {"method": "dynamic", "per_channel": False}
    for file_name, data in (
        ("product-embedder.yaml", embedder),
        ("product-recommender.yaml", recommender),
        ("product-reranker.yaml", reranker),
        ("review-sentiment.yaml", student),
        ("review-sentiment.int8.yaml", fallback),
    ):
        _write_recipe(folder / file_name, data)
    return folder


def test_build_defaults_publishes_the_fallback_when_the_default_misses_its_gate(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    for name in ("product-embedder", "product-recommender", "product-reranker"):
        (store / name / "1").mkdir(parents=True)  # built already: only the sentiment model is built
    recipes = _default_recipes(tmp_path / "recipes", tiny_checkpoints, student_floor=100.0)

    assert main(["build-defaults", "--store", str(store), "--recipes", str(recipes)]) == 0

    err = capsys.readouterr().err
    assert "review-sentiment.yaml missed its gate" in err
    assert "balanced_accuracy" in err  # the gate's table is printed
    assert "publishing review-sentiment.int8.yaml as review-sentiment instead" in err
    assert sorted(p.name for p in (store / "review-sentiment").iterdir()) == ["1"]
    manifest = json.loads((store / "review-sentiment" / "1" / "manifest.json").read_text())
    assert manifest["recipe"]["quantize"]["per_channel"] is False


def test_build_defaults_publishes_the_default_when_it_passes(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    for name in ("product-embedder", "product-recommender", "product-reranker"):
        (store / name / "1").mkdir(parents=True)
    recipes = _default_recipes(tmp_path / "recipes", tiny_checkpoints, student_floor=None)

    assert main(["build-defaults", "--store", str(store), "--recipes", str(recipes)]) == 0

    captured = capsys.readouterr()
    assert "missed its gate" not in captured.err
    assert "default model 2 of 4: review-sentiment" in captured.out
    assert re.search(
        r"review-sentiment: built in 0 min \d\d s \(0 min \d\d s since build-defaults", captured.out
    )
    manifest = json.loads((store / "review-sentiment" / "1" / "manifest.json").read_text())
    assert manifest["recipe"]["quantize"]["per_channel"] is True


def test_pruned_and_distilled_build_exports_a_smaller_graph(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from conversion.pipeline import build
    from conversion.recipe import parse_recipe

    data = tiny_recipe_data("sequence-classification", tiny_checkpoints["sequence-classification"])
    data["quantize"] = {"method": "none"}
    data["prune"] = {"heads_keep_fraction": 0.5, "ffn_keep_fraction": 0.5, "importance_texts": 32}
    data["distill"] = {"max_texts": 64, "batch_size": 16, "max_length": 32, "threads": 1}
    path = build(parse_recipe(data), tmp_path / "store", quiet=True)
    manifest = json.loads((path / "manifest.json").read_text())
    compression = manifest["compression"]
    assert compression["parameters_after"] < compression["parameters_before"]
    assert compression["prune"]["heads_keep_fraction"] == 0.5
    assert manifest["validation"]["parity"]["export"]["passed"] is True
    graph = onnx.load(str(path / "model.onnx"))
    shapes = {tuple(i.dims) for i in graph.graph.initializer if len(i.dims) == 2}
    # Really smaller, not masked: FFN 64 -> 32 wide, fused QKV of 2 heads x 8 x 3 instead of 4 heads.
    assert (32, 64) not in shapes
    assert (32, 96) not in shapes
    assert (32, 48) in shapes
    assert manifest["optimization"]["fused_ops"]["Attention"] == 1  # the [CLS]-only last layer: unfused


@pytest.mark.parametrize(
    ("quantize", "provider", "precision", "marker_op"),
    [
        ({"method": "fp16"}, "CUDAExecutionProvider", "fp16", "Cast"),
        ({"method": "static", "calibration_texts": 32}, "CPUExecutionProvider", "int8", "QuantizeLinear"),
    ],
)
def test_fp16_and_static_builds(
    tiny_checkpoints: dict[str, Path],
    tmp_path: Path,
    quantize: dict[str, object],
    provider: str,
    precision: str,
    marker_op: str,
) -> None:
    from conversion.pipeline import build
    from conversion.recipe import parse_recipe

    data = tiny_recipe_data("sequence-classification", tiny_checkpoints["sequence-classification"])
    data |= {"quantize": quantize, "provider": provider}
    path = build(parse_recipe(data), tmp_path / "store", quiet=True)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["precision"] == precision
    assert manifest["execution_providers"] == [provider]
    assert manifest["benchmark"]["intended_provider"] == provider
    assert manifest["validation"]["passed"] is True
    assert op_counts(path / "model.onnx").get(marker_op, 0) > 0
    if provider == "CUDAExecutionProvider":  # the CUDA kernel is fast: CUDA artifacts keep the fused op
        assert manifest["optimization"]["fused_ops"]["SkipLayerNormalization"] == 4
