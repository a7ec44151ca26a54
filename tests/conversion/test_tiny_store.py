import json
from pathlib import Path

from conversion.hashing import sha256_file


def test_tiny_store_has_four_int8_models_with_verified_files(tiny_store: Path) -> None:
    names = sorted(p.name for p in tiny_store.iterdir())
    assert names == ["product-embedder", "product-recommender", "product-reranker", "review-sentiment"]
    for name in names:
        version = tiny_store / name / "1"
        manifest = json.loads((version / "manifest.json").read_text())
        assert manifest["name"] == name
        assert manifest["version"] == "1"
        assert manifest["precision"] == "int8"
        assert set(manifest["files"]) == {"model.onnx", "tokenizer.json"}
        for file_name, digest in manifest["files"].items():
            assert sha256_file(version / file_name) == digest
    sentiment = json.loads((tiny_store / "review-sentiment" / "1" / "manifest.json").read_text())
    assert sentiment["labels"] == ["negative", "positive"]
    assert sentiment["outputs"] == ["logits"]
    embedder = json.loads((tiny_store / "product-embedder" / "1" / "manifest.json").read_text())
    assert embedder["outputs"] == ["embeddings"]
    assert embedder["pooling_in_graph"] is True
    assert embedder["user_tower"] == {"recency_half_life": None}
    recommender = json.loads((tiny_store / "product-recommender" / "1" / "manifest.json").read_text())
    assert recommender["user_tower"] == {"recency_half_life": 2.0}
