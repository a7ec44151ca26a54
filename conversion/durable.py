"""fsync helpers for writes that must survive a crash.

A rename is atomic but not durable: until the renamed files' data and the folders' entries are fsynced, a
power loss right after it can leave the new name pointing at empty or partial files.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsyncs a file's contents, or a folder's entries (the names created or renamed in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsyncs every file under `root`, then every folder, deepest first, `root` last."""
    folders: list[Path] = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            continue
        if path.is_file():
            fsync_path(path)
        elif path.is_dir():
            folders.append(path)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_path(folder)
    fsync_path(root)
