"""Locating the external tools the ops tests drive (installed by scripts/install-test-tools.sh)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def require_tool(name: str, *extra_dirs: str) -> str:
    """The path of a tool, or a test failure that says how to install it (never a silent skip)."""
    for directory in (str(VENV_BIN), *extra_dirs):
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run `bash scripts/install-test-tools.sh` (make test does)")
    return found
