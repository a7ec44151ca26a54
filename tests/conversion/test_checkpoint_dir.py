"""Training checkpoints are complete (with a COMPLETE.json marker) or absent; unfinished ones are redone."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from conversion.checkpoint_dir import (
    MARKER,
    check_replaceable,
    describe_input,
    is_complete,
    partial_dir,
    read_marker,
    write_checkpoint,
)
from conversion.errors import CheckpointError
from conversion.hashing import sha256_file
from tests.conversion.durability import inode, record_fsyncs_and_renames


def _save_weights(content: bytes) -> Callable[[Path], None]:
    def save(folder: Path) -> None:
        (folder / "config.json").write_text("{}", encoding="utf-8")
        (folder / "model.safetensors").write_bytes(content)

    return save


class Interrupted(Exception):
    pass


def _interrupted_save(folder: Path) -> None:
    (folder / "config.json").write_text("{}", encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"half of the wei")
    raise Interrupted


def test_a_written_checkpoint_carries_what_was_trained_and_its_file_hashes(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    trained = {"trained_by": "test", "settings": {"lr": 0.1}}
    assert write_checkpoint(out, trained, _save_weights(b"weights")) == out

    marker = read_marker(out)
    assert marker is not None
    assert (marker["trained_by"], marker["settings"], marker["schema_version"]) == ("test", {"lr": 0.1}, 1)
    assert marker["files"] == {
        "config.json": sha256_file(out / "config.json"),
        "model.safetensors": sha256_file(out / "model.safetensors"),
    }
    assert is_complete(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary folder left


def test_an_interrupted_write_leaves_the_previous_folder_and_no_temporary_one(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    with pytest.raises(Interrupted):
        write_checkpoint(out, {}, _interrupted_save)
    assert not out.exists()
    assert not partial_dir(out).exists()

    write_checkpoint(out, {"run": 1}, _save_weights(b"first"))
    with pytest.raises(Interrupted):
        write_checkpoint(out, {"run": 2}, _interrupted_save)
    marker = read_marker(out)
    assert marker is not None
    assert marker["run"] == 1
    assert (out / "model.safetensors").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_folder_without_the_marker_is_unfinished_and_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ckpt"
    out.mkdir()
    (out / "config.json").write_text("{}", encoding="utf-8")  # what an interrupted save_pretrained leaves
    (out / "model.safetensors").write_bytes(b"trunc")
    partial = partial_dir(out)
    partial.mkdir()  # left by a run killed while saving
    (partial / "config.json").write_text("{}", encoding="utf-8")
    assert not is_complete(out)

    write_checkpoint(out, {}, _save_weights(b"new weights"))
    assert is_complete(out)
    assert (out / "model.safetensors").read_bytes() == b"new weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    err = capsys.readouterr().err
    assert "leftover of an interrupted write" in err
    assert f"unfinished, no valid {MARKER}" in err


def test_a_changed_file_or_a_broken_marker_is_not_complete(tmp_path: Path) -> None:
    out = write_checkpoint(tmp_path / "ckpt", {}, _save_weights(b"weights"))
    (out / "model.safetensors").write_bytes(b"weightz")
    assert not is_complete(out)
    out = write_checkpoint(tmp_path / "other", {}, _save_weights(b"weights"))
    (out / MARKER).write_text("{not json", encoding="utf-8")
    assert not is_complete(out)
    (out / MARKER).write_text(json.dumps(["a", "list"]), encoding="utf-8")
    assert not is_complete(out)
    (out / "model.safetensors").unlink()
    assert not is_complete(out)
    assert not is_complete(tmp_path / "missing")


def test_a_folder_that_is_not_a_checkpoint_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        check_replaceable(tmp_path)
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        write_checkpoint(tmp_path, {}, _save_weights(b"w"))
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine"
    with pytest.raises(CheckpointError, match="not a folder"):
        check_replaceable(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")


def test_inputs_are_described_by_path_and_hash(tmp_path: Path) -> None:
    data = tmp_path / "train.tsv"
    data.write_text("text\tlabel\n", encoding="utf-8")
    assert describe_input(data) == {"path": str(data.resolve()), "sha256": sha256_file(data)}
    assert len(describe_input(tmp_path)["sha256"]) == 64


def test_the_checkpoint_is_fsynced_before_the_rename_and_its_parent_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = record_fsyncs_and_renames(monkeypatch)
    out = write_checkpoint(tmp_path / "ckpt", {}, _save_weights(b"weights"))

    renamed = events.index(("rename", inode(out)))
    before, after = {e[1] for e in events[:renamed]}, {e[1] for e in events[renamed + 1 :]}
    for name in ("config.json", "model.safetensors", MARKER):
        assert inode(out / name) in before, name
    assert events[renamed - 1] == ("fsync", inode(out))
    assert inode(tmp_path) in after
