"""Checkpoints written by training (fine-tune, distil) are either complete or absent.

A checkpoint is saved into a temporary sibling `.<name>.partial/`, closed by a `COMPLETE.json` marker
(what was trained, and every file's sha256), fsynced and renamed into place. Whoever asks "is it already
trained?" asks `is_complete`: a folder without a valid marker (a run interrupted before this existed, or
files changed since) is unfinished and is trained again; the new checkpoint replaces it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from conversion.durable import fsync_path, fsync_tree
from conversion.errors import CheckpointError
from conversion.hashing import sha256_dir, sha256_file

MARKER = "COMPLETE.json"
MARKER_SCHEMA = 1


def partial_dir(out_dir: Path) -> Path:
    """Where the checkpoint for `out_dir` is written before it is complete (one writer at a time)."""
    return out_dir.with_name(f".{out_dir.name}.partial")


def _replaced_dir(out_dir: Path) -> Path:
    return out_dir.with_name(f".{out_dir.name}.replaced")


def describe_input(path: Path) -> dict[str, str]:
    """What a marker records of a training input (a checkpoint folder or a data file): path and sha256."""
    digest = sha256_dir(path) if path.is_dir() else sha256_file(path)
    return {"path": str(path.resolve()), "sha256": digest}


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of a complete checkpoint at `path`; None if it is absent, unreadable, or a file it lists
    is missing or changed."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("schema_version") != MARKER_SCHEMA:
        return None
    files = marker.get("files")
    if not isinstance(files, dict) or not files:
        return None
    for name, digest in files.items():
        file = path / name
        if not file.is_file() or sha256_file(file) != digest:
            return None
    return marker


def is_complete(path: Path) -> bool:
    return read_marker(path) is not None


def check_replaceable(out_dir: Path) -> None:
    """Refuses, before any training, an `out_dir` that a new checkpoint could not replace."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise CheckpointError(f"{out_dir}: exists and is not a folder; refusing to replace it")
    names = {p.name for p in out_dir.iterdir()}
    if names and not names & {MARKER, "config.json"} and not any(n.endswith(".safetensors") for n in names):
        raise CheckpointError(f"{out_dir}: exists and is not a checkpoint folder; refusing to replace it")


def write_checkpoint(out_dir: Path, trained: Mapping[str, Any], save: Callable[[Path], None]) -> Path:
    """Runs `save(folder)` on a temporary sibling, adds the marker (`trained` + file hashes), fsyncs it and
    renames it to `out_dir`. On any failure `out_dir` is as before and the temporary folder is gone."""
    check_replaceable(out_dir)
    partial = partial_dir(out_dir)
    for leftover in (partial, _replaced_dir(out_dir)):
        if leftover.exists():
            print(f"{leftover}: removing the leftover of an interrupted write", file=sys.stderr)
            shutil.rmtree(leftover)
    partial.mkdir(parents=True)
    try:
        save(partial)
        _write_marker(partial, trained)
        fsync_tree(partial)
        _move_into_place(partial, out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out_dir


def save_trained_checkpoint(out_dir: Path, model: Any, tokenizer: Any, trained: Mapping[str, Any]) -> Path:
    """`write_checkpoint` of a Hugging Face model (safetensors) and its tokenizer."""

    def save(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    return write_checkpoint(out_dir, trained, save)


def _write_marker(folder: Path, trained: Mapping[str, Any]) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    body = {
        "schema_version": MARKER_SCHEMA,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **trained,
        "files": {p.relative_to(folder).as_posix(): sha256_file(p) for p in files},
    }
    (folder / MARKER).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def _move_into_place(partial: Path, out_dir: Path) -> None:
    # The old folder is renamed aside, not deleted in place: at every instant `out_dir` is either the old
    # folder, absent, or the new complete checkpoint.
    replaced = _replaced_dir(out_dir)
    if out_dir.exists():
        state = "a complete checkpoint" if is_complete(out_dir) else f"unfinished, no valid {MARKER}"
        print(f"{out_dir}: replacing the folder there ({state})", file=sys.stderr)
        os.rename(out_dir, replaced)
    os.rename(partial, out_dir)
    fsync_path(out_dir.parent)
    shutil.rmtree(replaced, ignore_errors=True)
