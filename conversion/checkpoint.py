"""Loading Hugging Face checkpoint directories, after safety checks that never execute their contents.

Refused before anything is loaded: pickled weights, missing or truncated safetensors, custom code.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conversion.errors import CheckpointError, CorruptCheckpointError, UnsafeCheckpointError
from conversion.hashing import sha256_dir
from conversion.kinds import ModelKind

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


def check_safetensors(path: Path) -> None:
    """Validates the header and that the file's length is exactly what the header's offsets declare."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CorruptCheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER or 8 + header_len > size:
            raise CorruptCheckpointError(
                f"{path}: truncated or corrupt safetensors file (header of {header_len} bytes, file {size})"
            )
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptCheckpointError(f"{path}: corrupt safetensors header: {exc}") from exc
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_len = size - 8 - header_len
    end_max = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(v) for v in info["data_offsets"])
            n_bytes = math.prod(int(d) for d in info["shape"]) * _DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpointError(f"{path}: corrupt safetensors entry for tensor {name!r}") from exc
        if end - begin != n_bytes or begin < 0:
            raise CorruptCheckpointError(f"{path}: tensor {name!r} offsets do not match its shape and dtype")
        end_max = max(end_max, end)
    if end_max != data_len:
        raise CorruptCheckpointError(
            f"{path}: truncated or corrupt safetensors file: header declares {end_max} data bytes, "
            f"file holds {data_len}"
        )


def check_checkpoint_dir(path: Path) -> dict[str, Any]:
    """All safety checks; returns the parsed config.json. Raises a CheckpointError naming the file."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory does not exist")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing (a Hugging Face checkpoint needs config.json)")
    pickles = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        names = ", ".join(str(p) for p in pickles)
        raise UnsafeCheckpointError(
            f"refusing pickled weights (they can execute code when loaded): {names}; "
            "convert the checkpoint to safetensors first"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    if "auto_map" in config or list(path.glob("*.py")):
        raise UnsafeCheckpointError(
            f"{config_path}: the checkpoint asks for custom code (auto_map or *.py files); "
            "remote code is never trusted"
        )
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise CheckpointError(f"{path}: no *.safetensors weights file")
    for file in weights:
        check_safetensors(file)
    return config


@dataclass
class LoadedCheckpoint:
    path: Path
    kind: ModelKind
    module: Any  # conversion.modeling.InferenceModule (typed loosely to keep torch imports lazy)
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    config: dict[str, Any]
    labels: list[str] | None
    sha256: str

    @property
    def tokenizer_json(self) -> str:
        """The fast tokenizer's serialised form, as the service loads it with `tokenizers`."""
        file = self.path / "tokenizer.json"
        if file.is_file():
            return file.read_text(encoding="utf-8")
        text: str = self.tokenizer.backend_tokenizer.to_str()
        return text


def _labels(
    config: dict[str, Any], kind: ModelKind, wanted: list[str] | None, path: Path
) -> list[str] | None:
    if kind != "sequence-classification":
        return None
    id2label = config.get("id2label") or {}
    found = [str(id2label[k]) for k in sorted(id2label, key=int)] if id2label else None
    if wanted is None:
        if found is None or any(label.startswith("LABEL_") for label in found):
            raise CheckpointError(
                f"{path}/config.json: no label names in id2label; give `labels` in the recipe"
            )
        return found
    if found is not None and len(found) != len(wanted):
        raise CheckpointError(f"{path}/config.json: {len(found)} labels, the recipe names {len(wanted)}")
    return wanted


def load_checkpoint(path: Path, kind: ModelKind, labels: list[str] | None = None) -> LoadedCheckpoint:
    """Checks, then loads the model (eval mode) and its fast tokenizer, offline and without remote code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    config = check_checkpoint_dir(path)
    digest = sha256_dir(path)
    resolved = _labels(config, kind, labels, path)

    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    from conversion.modeling import InferenceModule

    common: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True, "use_safetensors": True}
    try:
        if kind == "bi-encoder":
            model, info = AutoModel.from_pretrained(
                path, add_pooling_layer=False, output_loading_info=True, **common
            )
        else:
            num_labels = 1 if kind == "cross-encoder" else len(resolved or [])
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=num_labels, output_loading_info=True, **common
            )
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, **common)  # type: ignore[no-untyped-call]
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot load as {kind}: {exc}") from exc
    if info["missing_keys"]:
        missing = ", ".join(sorted(info["missing_keys"])[:5])
        raise CheckpointError(
            f"{path}: weights missing for a {kind} model ({missing}); refusing a half-loaded model"
        )
    if not tokenizer.is_fast:
        raise CheckpointError(f"{path}: no fast tokenizer (tokenizer.json) could be built")
    uses_tt = "token_type_ids" in tokenizer.model_input_names
    module = InferenceModule(model, kind, uses_tt).eval()
    return LoadedCheckpoint(path, kind, module, tokenizer, config, resolved, digest)
