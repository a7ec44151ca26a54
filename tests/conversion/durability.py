"""Recording the fsyncs and renames of a write, to test their order (shared by the publish and checkpoint
tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

Event = tuple[str, tuple[int, int]]


def inode(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def record_fsyncs_and_renames(monkeypatch: pytest.MonkeyPatch) -> list[Event]:
    """("fsync" | "rename", inode) in the order they happen; the real calls still run."""
    events: list[Event] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        stat = os.fstat(fd)
        events.append(("fsync", (stat.st_dev, stat.st_ino)))
        real_fsync(fd)

    def rename(src: str | Path, dst: str | Path) -> None:
        real_rename(src, dst)
        events.append(("rename", inode(Path(dst))))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    return events
