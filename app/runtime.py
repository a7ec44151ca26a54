"""One loaded model version: tokenizer + onnxruntime session + the post-processing of its kind.

Pure and synchronous (the engine calls it from worker threads); knows nothing of HTTP. `Runtime` is
the small interface the engine needs; `OnnxRuntime` is its onnxruntime implementation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from app.errors import ModelLoadError
from app.store import Manifest, VerifiedVersion

log = logging.getLogger("app.runtime")

TextInput = str | tuple[str, str]
FloatArray = npt.NDArray[np.float32]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

# Each engine worker thread tokenizes its own batch window. The tokenizers library's own thread pool (rayon)
# would hand every window to two more threads and spin there: ~9% of a core at 2,100 reviews/s on two cores,
# measured per thread. Read by the library at every call; an explicit setting in the environment wins.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass(frozen=True)
class Tokenized:
    """A tokenized batch window: one entry per input, in input order."""

    encodings: list[Encoding]
    lengths: list[int]
    truncated: list[bool]


@dataclass(frozen=True)
class RuntimeOptions:
    provider: str = CPU
    threads: int = 1
    allow_spinning: bool = True
    max_sequence_length: int | None = None


class Runtime(Protocol):
    """What the engine needs from a model: tokenize a window, run a subset of it."""

    manifest: Manifest
    max_length: int
    provider: str

    def tokenize(self, inputs: Sequence[TextInput]) -> Tokenized: ...

    def run(self, tokens: Tokenized, indices: Sequence[int]) -> FloatArray:
        """Model outputs for `tokens` at `indices`, float32 `[len(indices), dim]`."""
        ...

    def warmup(self, batch_size: int) -> None: ...


def resolve_provider(requested: str) -> str:
    """`cuda` -> the CUDA provider if this onnxruntime build has it, else CPU with a warning."""
    if requested == "cuda":
        if CUDA in ort.get_available_providers():
            return CUDA
        log.warning("provider cuda requested but onnxruntime has no CUDAExecutionProvider; using cpu")
    return CPU


def session_options(options: RuntimeOptions) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.allow_spinning else "0")
    so.log_severity_level = 3
    return so


def sequence_buckets(max_length: int) -> list[int]:
    buckets = [8]
    while buckets[-1] * 2 < max_length:
        buckets.append(buckets[-1] * 2)
    if buckets[-1] != max_length:
        buckets.append(max_length)
    return [b for b in buckets if b <= max_length]


def _softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    out: FloatArray = shifted.astype(np.float32, copy=False)
    return out


def _l2_normalize(x: FloatArray) -> FloatArray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    out: FloatArray = (x / norms).astype(np.float32, copy=False)
    return out


class OnnxRuntime:
    """A model version on one onnxruntime session. Not thread-safe: one worker thread owns it."""

    def __init__(self, verified: VerifiedVersion, options: RuntimeOptions) -> None:
        manifest = verified.manifest
        self.manifest = manifest
        self.provider = options.provider
        cap = options.max_sequence_length
        self.max_length = min(manifest.max_sequence_length, cap) if cap else manifest.max_sequence_length
        where = f"{manifest.name}/{manifest.version}"
        try:
            self.tokenizer = Tokenizer.from_str(verified.tokenizer_json)
        except Exception as exc:
            raise ModelLoadError(f"{where}: tokenizer.json does not load: {exc}", "tokenizer") from exc
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        pad = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = pad if pad is not None else 0
        providers = [CUDA, CPU] if options.provider == CUDA else [CPU]
        try:
            self.session = ort.InferenceSession(
                verified.onnx_bytes, sess_options=session_options(options), providers=providers
            )
        except Exception as exc:
            raise ModelLoadError(f"{where}: onnxruntime refused the model: {exc}", "onnxruntime") from exc
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        if set(manifest.inputs) != graph_inputs:
            raise ModelLoadError(
                f"{where}: graph inputs {sorted(graph_inputs)} differ from the manifest's {manifest.inputs}",
                "graph",
            )
        if not manifest.outputs or manifest.outputs[0] not in graph_outputs:
            raise ModelLoadError(f"{where}: graph has no output {manifest.outputs[:1]}", "graph")
        if manifest.model_kind == "sequence-classification" and not manifest.labels:
            raise ModelLoadError(f"{where}: a sequence-classification manifest needs labels", "manifest")
        self.output_name = manifest.outputs[0]
        self.use_type_ids = "token_type_ids" in graph_inputs
        self.kind = manifest.model_kind

    # --- tokenization -------------------------------------------------------------------------------
    def tokenize(self, inputs: Sequence[TextInput]) -> Tokenized:
        encodings = self.tokenizer.encode_batch(list(inputs))
        lengths = [len(e.ids) for e in encodings]
        truncated = [bool(e.overflowing) for e in encodings]
        return Tokenized(encodings, lengths, truncated)

    # --- inference ----------------------------------------------------------------------------------
    def run(self, tokens: Tokenized, indices: Sequence[int]) -> FloatArray:
        width = max(tokens.lengths[i] for i in indices)
        n = len(indices)
        ids = np.full((n, width), self.pad_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        type_ids = np.zeros((n, width), dtype=np.int64) if self.use_type_ids else None
        for row, i in enumerate(indices):
            enc = tokens.encodings[i]
            length = tokens.lengths[i]
            ids[row, :length] = enc.ids
            mask[row, :length] = 1
            if type_ids is not None:
                type_ids[row, :length] = enc.type_ids
        return self._run_arrays(ids, mask, type_ids)

    def _run_arrays(
        self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64], type_ids: npt.NDArray[np.int64] | None
    ) -> FloatArray:
        feeds = {"input_ids": ids, "attention_mask": mask}
        if type_ids is not None:
            feeds["token_type_ids"] = type_ids
        raw = np.asarray(self.session.run([self.output_name], feeds)[0], dtype=np.float32)
        return self._postprocess(raw, mask)

    def _postprocess(self, raw: FloatArray, mask: npt.NDArray[np.int64]) -> FloatArray:
        if self.kind == "sequence-classification":
            return _softmax(raw.reshape(raw.shape[0], -1))
        if self.kind == "cross-encoder":
            logits = raw.reshape(raw.shape[0], -1)[:, :1]
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        # bi-encoder: cosine similarity downstream is a dot product of unit vectors.
        if raw.ndim == 3:  # token embeddings: mean-pool over real tokens
            weights = mask[:, :, None].astype(np.float32)
            raw = (raw * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        if self.manifest.pooling_in_graph and self.manifest.normalize:
            return raw
        return _l2_normalize(raw)

    def warmup(self, batch_size: int) -> None:
        """Run every sequence-length bucket once so the first requests find their allocations made."""
        # Real token ids (a truncated encoding keeps its special tokens), so any vocabulary size works.
        full = self.tokenizer.encode(" ".join(["warm up the model"] * self.max_length)).ids
        for length in sequence_buckets(min(self.max_length, len(full))):
            row = full[: length - 1] + full[-1:]
            ids = np.tile(np.asarray(row, dtype=np.int64), (batch_size, 1))
            mask = np.ones_like(ids)
            out = self._run_arrays(ids, mask, np.zeros_like(ids) if self.use_type_ids else None)
            self._check_output(out, batch_size)

    def _check_output(self, out: FloatArray, batch_size: int) -> None:
        where = f"{self.manifest.name}/{self.manifest.version}"
        if out.ndim != 2 or out.shape[0] != batch_size:
            raise ModelLoadError(f"{where}: output shape {out.shape} is not [batch, dim]", "warmup")
        labels = self.manifest.labels
        if self.kind == "sequence-classification" and labels and out.shape[1] != len(labels):
            raise ModelLoadError(f"{where}: {out.shape[1]} logits for {len(labels)} labels", "warmup")
        if not np.isfinite(out).all():
            raise ModelLoadError(f"{where}: warm-up produced non-finite outputs", "warmup")


def load_runtimes(verified: VerifiedVersion, options: RuntimeOptions, sessions: int) -> list[OnnxRuntime]:
    """`sessions` independent runtimes over the same verified bytes (one per worker thread)."""
    return [OnnxRuntime(verified, options) for _ in range(sessions)]
