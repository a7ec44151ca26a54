"""Atomic publication: write `<name>/.tmp-<random>/`, fsync it, then rename it to `<name>/<next version>/`."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from conversion.durable import fsync_path
from conversion.errors import StoreError
from conversion.hashing import sha256_file

# A published version's folder name; the service reads only these (app.store.VERSION_NAME, the same rule).
VERSION_NAME = re.compile(r"[1-9][0-9]{0,17}")

MANIFEST = "manifest.json"
_RENAME_ATTEMPTS = 5


def existing_versions(model_dir: Path) -> list[int]:
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name) for p in model_dir.iterdir() if p.is_dir() and VERSION_NAME.fullmatch(p.name)
    )


def next_version(model_dir: Path) -> str:
    versions = existing_versions(model_dir)
    return str(versions[-1] + 1 if versions else 1)


def publish_version(store_root: Path, name: str, files: Mapping[str, Path], manifest: dict[str, Any]) -> Path:
    """Copies `files` (name in the version folder -> source path), adds `files`/`version` to the manifest.

    Nothing is left behind on failure: the temporary folder is removed, the store is as before. Every file
    and the temporary folder are fsynced before the rename, the model folder after it, so a crash cannot
    leave a version folder whose files are empty or partial.
    """
    model_dir = store_root / name
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=model_dir))
    try:
        for file_name, source in files.items():
            shutil.copyfile(source, tmp / file_name)
            fsync_path(tmp / file_name)
        hashes = {file_name: sha256_file(tmp / file_name) for file_name in sorted(files)}
        for _ in range(_RENAME_ATTEMPTS):
            version = next_version(model_dir)
            body = {**manifest, "version": version, "files": hashes}
            (tmp / MANIFEST).write_text(json.dumps(body, indent=2, sort_keys=False) + "\n", encoding="utf-8")
            fsync_path(tmp / MANIFEST)
            os.chmod(tmp, 0o755)
            fsync_path(tmp)
            try:
                os.rename(tmp, model_dir / version)  # fails if another build took this version meanwhile
            except OSError:
                continue
            fsync_path(model_dir)
            fsync_path(store_root)  # the model folder itself may be new
            return model_dir / version
        raise StoreError(f"{model_dir}: could not claim a new version after {_RENAME_ATTEMPTS} attempts")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not any(model_dir.iterdir()):
            model_dir.rmdir()
