"""Reading the model store from the conversion side: names, versions, manifests, file verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conversion.errors import StoreError
from conversion.hashing import sha256_file
from conversion.publish import MANIFEST, existing_versions


def list_store(store_root: Path) -> dict[str, list[str]]:
    """{name: [versions, oldest first]}; folders starting with '.' are ignored."""
    if not store_root.is_dir():
        return {}
    found = {}
    for model_dir in sorted(store_root.iterdir()):
        if model_dir.is_dir() and not model_dir.name.startswith(".") and model_dir.name != "recipes":
            versions = [str(v) for v in existing_versions(model_dir)]
            if versions:
                found[model_dir.name] = versions
    return found


def version_dir(store_root: Path, name: str, version: str | None = None) -> Path:
    versions = list_store(store_root).get(name)
    if not versions:
        raise StoreError(f"{store_root}: no published versions of {name!r}")
    chosen = version or versions[-1]
    if chosen not in versions:
        raise StoreError(f"{store_root}/{name}: no version {chosen!r} (have {', '.join(versions)})")
    return store_root / name / chosen


def read_manifest(path: Path) -> dict[str, Any]:
    file = path / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{file}: unreadable manifest: {exc}") from exc
    return manifest


def verify_files(path: Path) -> dict[str, Any]:
    """Reads the manifest and checks every listed file's sha256; raises StoreError on any mismatch."""
    manifest = read_manifest(path)
    for file_name, expected in manifest.get("files", {}).items():
        file = path / file_name
        if not file.is_file():
            raise StoreError(f"{file}: listed in the manifest but missing")
        if sha256_file(file) != expected:
            raise StoreError(f"{file}: sha256 does not match the manifest")
    return manifest
