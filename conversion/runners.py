"""Batched inference over texts with the PyTorch reference or an onnxruntime session, same tokenization."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tqdm.auto import tqdm

from conversion.modeling import InferenceModule

Batch = dict[str, np.ndarray]
TextInput = str | tuple[str, str]
BatchFn = Callable[[Batch], np.ndarray]


def tokenize(
    tokenizer: Any, texts: Sequence[TextInput], max_length: int, input_names: Sequence[str]
) -> Batch:
    if texts and isinstance(texts[0], tuple):
        first = [t[0] for t in texts]
        second = [t[1] for t in texts]
        enc = tokenizer(
            first, second, padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
    else:
        enc = tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="np"
        )
    return {name: enc[name].astype(np.int64) for name in input_names}


def torch_batch_fn(module: InferenceModule) -> BatchFn:
    def run(batch: Batch) -> np.ndarray:
        with torch.inference_mode():
            out = module(**{k: torch.from_numpy(v) for k, v in batch.items()})
        result: np.ndarray = out.float().numpy()
        return result

    return run


def ort_session(
    model_path: Path, provider: str = "CPUExecutionProvider", threads: int = 1
) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    providers = [provider] if provider in ort.get_available_providers() else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(model_path), options, providers=providers)


def ort_batch_fn(session: ort.InferenceSession) -> BatchFn:
    wanted = {i.name for i in session.get_inputs()}

    def run(batch: Batch) -> np.ndarray:
        out = session.run(None, {k: v for k, v in batch.items() if k in wanted})[0]
        return np.asarray(out, dtype=np.float32)

    return run


def run_texts(
    fn: BatchFn,
    tokenizer: Any,
    texts: Sequence[TextInput],
    *,
    max_length: int,
    input_names: Sequence[str],
    batch_size: int = 32,
    desc: str | None = None,
) -> np.ndarray:
    """Runs `texts` in length-sorted batches and returns the outputs in the original order."""
    lengths = [len(t[0]) + len(t[1]) if isinstance(t, tuple) else len(t) for t in texts]
    order = np.argsort(lengths, kind="stable")
    outputs: list[np.ndarray] = []
    starts = range(0, len(texts), batch_size)
    for start in tqdm(starts, desc=desc, leave=False, disable=True if desc is None else None):
        chunk = [texts[i] for i in order[start : start + batch_size]]
        outputs.append(fn(tokenize(tokenizer, chunk, max_length, input_names)))
    stacked = np.concatenate(outputs, axis=0)
    result = np.empty_like(stacked)
    result[order] = stacked
    return result
