from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.errors import ModelLoadError
from app.store import ModelStore


@pytest.fixture
def store_copy(tiny_store: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(tiny_store, root)
    return root


def flip_byte(path: Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


def test_lists_models_and_versions_ignoring_unfinished_folders(store_copy: Path) -> None:
    shutil.copytree(store_copy / "review-sentiment" / "1", store_copy / "review-sentiment" / "10")
    (store_copy / "review-sentiment" / ".tmp-abc").mkdir()
    (store_copy / "review-sentiment" / "2").mkdir()  # no manifest: a reader never sees it
    store = ModelStore(store_copy)
    assert store.names() == [
        "product-embedder",
        "product-recommender",
        "product-reranker",
        "review-sentiment",
    ]
    assert store.versions("review-sentiment") == ["1", "10"]
    assert store.candidates("review-sentiment", None) == ["10", "1"]
    assert store.candidates("review-sentiment", "1") == ["1"]
    assert store.candidates("review-sentiment", "7") == []
    assert ModelStore(store_copy / "missing").names() == []


def test_verified_version_carries_the_hashed_bytes(tiny_store: Path) -> None:
    verified = ModelStore(tiny_store).load_verified("review-sentiment", "1")
    assert verified.manifest.labels == ["negative", "positive"]
    assert verified.onnx_bytes == (tiny_store / "review-sentiment" / "1" / "model.onnx").read_bytes()
    assert json.loads(verified.tokenizer_json)["model"]["type"] == "WordPiece"


def test_a_flipped_byte_is_refused(store_copy: Path) -> None:
    flip_byte(store_copy / "product-reranker" / "1" / "model.onnx")
    with pytest.raises(ModelLoadError, match=r"sha256 of model\.onnx") as info:
        ModelStore(store_copy).load_verified("product-reranker", "1")
    assert info.value.reason == "checksum"


def test_missing_or_unlisted_files_are_refused(store_copy: Path) -> None:
    folder = store_copy / "product-embedder" / "1"
    (folder / "extra.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="not in the manifest"):
        ModelStore(store_copy).load_verified("product-embedder", "1")
    (folder / "extra.bin").unlink()
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"missing file tokenizer\.json"):
        ModelStore(store_copy).load_verified("product-embedder", "1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema_version": 2}, "schema_version"),
        ({"version": "5"}, "manifest says"),
        ({"model_kind": "gpt"}, "model_kind"),
        ({"files": None}, "files"),
    ],
)
def test_bad_manifests_are_refused(store_copy: Path, change: dict[str, object], message: str) -> None:
    path = store_copy / "review-sentiment" / "1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(change)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match=message):
        ModelStore(store_copy).load_verified("review-sentiment", "1")


def test_unreadable_manifest_is_refused(store_copy: Path) -> None:
    (store_copy / "review-sentiment" / "1" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable manifest"):
        ModelStore(store_copy).read_manifest("review-sentiment", "1")
