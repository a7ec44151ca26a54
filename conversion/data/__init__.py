"""Loaders for the real labelled data in ../shared/data (never copied into the repo) and MovieLens-100K."""

import os
from pathlib import Path

from conversion.errors import ConversionError

DATA_DIR_ENV = "CONVERSION_DATA_DIR"


class DataError(ConversionError):
    """A data file is missing or malformed."""


def data_root() -> Path:
    """`$CONVERSION_DATA_DIR`, else `../shared/data` beside the repository."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Tab-separated rows keyed by the header; no quoting (texts may contain quotes)."""
    if not path.is_file():
        raise DataError(f"{path}: no such data file (set ${DATA_DIR_ENV} to the shared data folder)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise DataError(f"{path}: empty file")
    header = lines[0].split("\t")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        cells = line.split("\t")
        if len(cells) != len(header):
            raise DataError(f"{path}:{number}: expected {len(header)} columns, got {len(cells)}")
        rows.append(dict(zip(header, cells, strict=True)))
    return rows
