import json
from pathlib import Path
from typing import Any

from bench.variants import pick_sentiment, plan_variants, read_artifacts


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


def test_plan_pins_versions_and_skips_what_is_missing(tmp_path: Path) -> None:
    publish(tmp_path, "review-sentiment", "1", "int8")
    publish(tmp_path, "product-embedder", "1", "int8")
    (tmp_path / ".tmp-x" / "9").mkdir(parents=True)  # half-written versions are ignored
    variants, skipped = plan_variants(tmp_path)
    keys = [v.key for v in variants]
    assert keys == ["baseline", "int8-batch", "int8-nobatch"]
    assert len(skipped) == 2
    assert any("fp32" in line for line in skipped)
    on = variants[1]
    assert on.env["INFERENCE_PINNED_VERSIONS"] == "review-sentiment=1,product-embedder=1"
    assert on.env["INFERENCE_BATCHING"] == "true"
    assert variants[2].env["INFERENCE_BATCHING"] == "false"
    assert on.env["INFERENCE_MODEL_STORE"] == str(tmp_path)


def test_empty_or_missing_store_gives_only_the_baseline(tmp_path: Path) -> None:
    variants, skipped = plan_variants(tmp_path / "nothing")
    assert [v.key for v in variants] == ["baseline"]
    assert len(skipped) == 3
