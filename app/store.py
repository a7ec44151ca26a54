"""Reads model_store/: manifests, versions, and the sha256 check that comes before any session exists.

A version is handed out only as a `VerifiedVersion`, whose bytes are the ones that were hashed: the
session and tokenizer are built from those bytes, never by re-reading the files after the check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import ModelLoadError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
# ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() then refuses or misreads.
VERSION_NAME = re.compile(r"[1-9][0-9]{0,17}")

log = logging.getLogger("app.store")

ModelKind = Literal["sequence-classification", "cross-encoder", "bi-encoder"]


class UserTower(BaseModel):
    """How /v1/recommend weighs a history with this bi-encoder (app/user_vector.py); absent: a plain mean."""

    model_config = ConfigDict(extra="allow", frozen=True)

    recency_half_life: float | None = Field(default=None, ge=0.5)


class Manifest(BaseModel):
    """The fields of manifest.json the service relies on (model_store/README.md); others are kept as-is."""

    model_config = ConfigDict(extra="allow", frozen=True, protected_namespaces=())

    schema_version: int
    name: str
    version: str
    task: Literal["sentiment", "ranking", "embedding"]
    model_kind: ModelKind
    labels: list[str] | None = None
    pooling: str | None = None
    normalize: bool = False
    pooling_in_graph: bool = False
    user_tower: UserTower | None = None
    max_sequence_length: int
    onnx_file: str
    tokenizer_file: str
    inputs: list[str]
    outputs: list[str]
    precision: Literal["fp32", "fp16", "int8"]
    execution_providers: list[str] = []
    files: dict[str, str]
    created_at: str | None = None
    size_bytes: int | None = None
    validation: dict[str, Any] | None = None
    benchmark: dict[str, Any] | None = None
    versus_teacher: dict[str, Any] | None = None


@dataclass(frozen=True)
class VerifiedVersion:
    manifest: Manifest
    path: Path
    onnx_bytes: bytes = field(repr=False)
    tokenizer_json: str = field(repr=False)


def version_key(version: str) -> int:
    return int(version)


class ModelStore:
    """One model store folder: `<root>/<name>/<version>/{model.onnx, tokenizer.json, manifest.json}`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._warned: set[Path] = set()

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and self.versions(p.name)
        )

    def versions(self, name: str) -> list[str]:
        """Published versions of `name`, oldest first. Folders starting with '.' are unfinished
        publications; any other folder whose name is not a plain version number ("1", "2", ...) is
        ignored with a warning (once per folder)."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = []
        for p in folder.iterdir():
            if not p.is_dir() or p.name.startswith("."):
                continue
            if not VERSION_NAME.fullmatch(p.name):
                self._warn_once(p, "its name is not a version number (1, 2, ...)")
            elif not (p / MANIFEST).is_file():
                self._warn_once(p, f"it has no {MANIFEST}")
            else:
                found.append(p.name)
        return sorted(found, key=version_key)

    def _warn_once(self, path: Path, why: str) -> None:
        if path not in self._warned:
            self._warned.add(path)
            log.warning("ignoring %s in the model store: %s", path, why)

    def read_manifest(self, name: str, version: str) -> Manifest:
        path = self.root / name / version / MANIFEST
        try:
            raw = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{name}/{version}: unreadable manifest: {exc}", "manifest") from exc
        try:
            manifest = Manifest.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ModelLoadError(
                f"{name}/{version}: invalid manifest: {where}: {first['msg']}", "manifest"
            ) from exc
        if manifest.schema_version != SCHEMA_VERSION:
            raise ModelLoadError(
                f"{name}/{version}: schema_version {manifest.schema_version}, expected {SCHEMA_VERSION}",
                "manifest",
            )
        if manifest.name != name or manifest.version != version:
            raise ModelLoadError(
                f"{name}/{version}: manifest says {manifest.name}/{manifest.version}", "manifest"
            )
        return manifest

    def load_verified(self, name: str, version: str) -> VerifiedVersion:
        """Read every file of a version and check it against the manifest's sha256; refuse any mismatch."""
        manifest = self.read_manifest(name, version)
        folder = self.root / name / version
        for needed in (manifest.onnx_file, manifest.tokenizer_file):
            if needed not in manifest.files:
                raise ModelLoadError(f"{name}/{version}: manifest lists no checksum for {needed}", "manifest")
        present = {p.name for p in folder.iterdir() if p.name != MANIFEST}
        unlisted = sorted(present - set(manifest.files))
        if unlisted:
            raise ModelLoadError(
                f"{name}/{version}: files not in the manifest: {', '.join(unlisted)}", "checksum"
            )
        contents: dict[str, bytes] = {}
        for file_name, expected in manifest.files.items():
            file_path = folder / file_name
            if Path(file_name).name != file_name or not file_path.is_file():
                raise ModelLoadError(f"{name}/{version}: missing file {file_name}", "missing_file")
            data = file_path.read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            if actual != expected.lower():
                raise ModelLoadError(
                    f"{name}/{version}: sha256 of {file_name} is {actual}, manifest says {expected}",
                    "checksum",
                )
            if file_name in (manifest.onnx_file, manifest.tokenizer_file):
                contents[file_name] = data
        try:
            tokenizer_json = contents[manifest.tokenizer_file].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ModelLoadError(f"{name}/{version}: tokenizer file is not UTF-8", "tokenizer") from exc
        return VerifiedVersion(manifest, folder, contents[manifest.onnx_file], tokenizer_json)

    def candidates(self, name: str, pinned: str | None) -> list[str]:
        """Versions to try for `name`, best first: the pinned one only, or newest to oldest."""
        if pinned is not None:
            return [pinned] if pinned in self.versions(name) else []
        return list(reversed(self.versions(name)))
