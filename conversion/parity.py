"""Parity: the onnxruntime graph against the PyTorch reference on real texts of mixed lengths, batch > 1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from conversion.errors import ParityError
from conversion.runners import TextInput, ort_batch_fn, ort_session, run_texts, torch_batch_fn


@dataclass(frozen=True)
class ParityReport:
    texts: int
    max_abs_diff: float
    cosine_mean: float
    cosine_min: float
    atol: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a2 = a.reshape(len(a), -1).astype(np.float64)
    b2 = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1)
    result: np.ndarray = (a2 * b2).sum(axis=1) / np.maximum(norms, 1e-12)
    return result


def compare(reference: np.ndarray, candidate: np.ndarray, atol: float) -> ParityReport:
    diff = float(np.max(np.abs(reference.astype(np.float64) - candidate.astype(np.float64))))
    cos = row_cosine(reference, candidate)
    return ParityReport(len(reference), diff, float(cos.mean()), float(cos.min()), atol, diff <= atol)


def check_parity(
    loaded: Any,
    onnx_path: Path,
    texts: Sequence[TextInput],
    *,
    max_length: int,
    atol: float,
    batch_size: int = 8,
    raise_on_failure: bool = True,
) -> ParityReport:
    """`loaded` is a LoadedCheckpoint. Raises ParityError past `atol` unless told otherwise."""
    names = loaded.module.input_names
    kwargs = {"max_length": max_length, "input_names": names, "batch_size": batch_size}
    reference = run_texts(torch_batch_fn(loaded.module), loaded.tokenizer, texts, **kwargs)
    candidate = run_texts(ort_batch_fn(ort_session(onnx_path)), loaded.tokenizer, texts, **kwargs)
    report = compare(reference, candidate, atol)
    if raise_on_failure and not report.passed:
        raise ParityError(
            f"{onnx_path.name}: max abs diff {report.max_abs_diff:.3g} against PyTorch exceeds atol {atol:g} "
            f"(cosine mean {report.cosine_mean:.6f}, min {report.cosine_min:.6f})"
        )
    return report
