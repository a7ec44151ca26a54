import json
from pathlib import Path

import pytest

from conversion.errors import StoreError
from conversion.hashing import sha256_file
from conversion.publish import next_version, publish_version
from conversion.store import list_store, read_manifest, verify_files, version_dir
from tests.conversion.durability import inode, record_fsyncs_and_renames


def _files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "src").mkdir()
    model, tokenizer = tmp_path / "src" / "m.onnx", tmp_path / "src" / "t.json"
    model.write_bytes(b"onnx bytes")
    tokenizer.write_text("{}")
    return {"model.onnx": model, "tokenizer.json": tokenizer}


def test_versions_are_numbered_and_files_hashed(tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = _files(tmp_path)
    first = publish_version(store, "m", files, {"schema_version": 1, "name": "m"})
    second = publish_version(store, "m", files, {"schema_version": 1, "name": "m"})
    assert (first.name, second.name) == ("1", "2")
    manifest = read_manifest(second)
    assert manifest["version"] == "2"
    assert manifest["files"] == {
        name: sha256_file(second / name) for name in ("model.onnx", "tokenizer.json")
    }
    assert sorted(p.name for p in second.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]
    assert list_store(store) == {"m": ["1", "2"]}
    assert version_dir(store, "m") == second
    assert verify_files(first)["version"] == "1"


def test_versions_sort_numerically_and_dot_folders_are_ignored(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    for name in ("1", "9", "10", ".tmp-abc", "junk"):
        (model_dir / name).mkdir(parents=True)
    assert next_version(model_dir) == "11"
    assert list_store(tmp_path) == {"m": ["1", "9", "10"]}


def test_a_failure_while_publishing_leaves_no_trace(tmp_path: Path) -> None:
    store = tmp_path / "store"
    files = _files(tmp_path)
    publish_version(store, "m", files, {"name": "m"})
    before = sorted(p.relative_to(store).as_posix() for p in store.rglob("*"))
    broken = {**files, "extra.bin": tmp_path / "does-not-exist"}
    with pytest.raises(FileNotFoundError):
        publish_version(store, "m", broken, {"name": "m"})
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*")) == before
    with pytest.raises(FileNotFoundError):
        publish_version(store, "other", broken, {"name": "other"})
    assert not (store / "other").exists()


def test_tampered_files_are_detected(tmp_path: Path) -> None:
    path = publish_version(tmp_path / "store", "m", _files(tmp_path), {"name": "m"})
    (path / "model.onnx").write_bytes(b"tampered")
    with pytest.raises(StoreError, match="sha256"):
        verify_files(path)
    with pytest.raises(StoreError, match="no version"):
        version_dir(tmp_path / "store", "m", "7")
    with pytest.raises(StoreError, match="no published versions"):
        version_dir(tmp_path / "store", "nothing")
    assert json.loads((path / "manifest.json").read_text())["name"] == "m"


def test_files_and_folders_are_fsynced_around_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files, manifest and the temporary folder before the rename, the model folder after it."""
    events = record_fsyncs_and_renames(monkeypatch)
    path = publish_version(tmp_path / "store", "m", _files(tmp_path), {"name": "m"})

    renamed = events.index(("rename", inode(path)))  # a rename keeps the inodes of the folder and files
    before, after = {e[1] for e in events[:renamed]}, {e[1] for e in events[renamed + 1 :]}
    for name in ("model.onnx", "tokenizer.json", "manifest.json"):
        assert inode(path / name) in before, name
    assert inode(path) in before
    assert inode(path.parent) in after
    assert events[renamed - 1] == ("fsync", inode(path))  # the folder's entries, once all files are in


def test_published_folder_names_follow_the_services_version_rule(tmp_path: Path) -> None:
    from app.store import VERSION_NAME as SERVED
    from conversion.publish import VERSION_NAME, next_version

    assert VERSION_NAME.pattern == SERVED.pattern
    for odd in ("²", "v3", "07", "-1"):
        (tmp_path / "m" / odd).mkdir(parents=True)
    (tmp_path / "m" / "2").mkdir()
    assert next_version(tmp_path / "m") == "3"
