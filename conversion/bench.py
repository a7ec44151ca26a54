"""Model-level benchmark: median latency and sequences/s over a batch x sequence-length grid.

The artifact runs in onnxruntime on its provider; the PyTorch fp32 source runs at the same points.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from tqdm.auto import tqdm

from conversion.recipe import BenchmarkConfig
from conversion.runners import Batch, ort_batch_fn, ort_session, torch_batch_fn


def synthetic_batch(batch: int, seq: int, input_names: list[str], vocab_size: int, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    feeds = {
        "input_ids": rng.integers(5, max(vocab_size, 6), size=(batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, seq), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq), dtype=np.int64),
    }
    return {name: feeds[name] for name in input_names}


def median_ms(fn: Callable[[Batch], Any], batch: Batch, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(batch)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def run_benchmark(
    onnx_path: Path,
    config: BenchmarkConfig,
    *,
    provider: str,
    input_names: list[str],
    vocab_size: int,
    source_module: Any | None = None,
) -> dict[str, Any]:
    """Returns the manifest's `benchmark` object."""
    used = provider if provider in ort.get_available_providers() else "CPUExecutionProvider"
    artifact = ort_batch_fn(ort_session(onnx_path, used, config.threads))
    source = torch_batch_fn(source_module) if source_module is not None and config.compare_source else None
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    results = []
    try:
        grid = [(b, s) for b in config.batch_sizes for s in config.sequence_lengths]
        for b, s in tqdm(grid, desc="benchmark", leave=False, disable=None):
            batch = synthetic_batch(b, s, input_names, vocab_size)
            ms = median_ms(artifact, batch, config.warmup, config.repeats)
            row: dict[str, Any] = {
                "batch_size": b,
                "sequence_length": s,
                "latency_ms_p50": round(ms, 3),
                "sequences_per_s": round(1000 * b / ms, 2),
            }
            if source is not None:
                src_ms = median_ms(source, batch, config.warmup, config.repeats)
                row |= {
                    "source_latency_ms_p50": round(src_ms, 3),
                    "source_sequences_per_s": round(1000 * b / src_ms, 2),
                    "speedup_vs_source": round(src_ms / ms, 3),
                }
            results.append(row)
    finally:
        torch.set_num_threads(previous_threads)
    return {
        "provider": used,
        "intended_provider": provider,
        "threads": config.threads,
        "source_runtime": "pytorch-fp32" if source is not None else None,
        "results": results,
    }


def format_benchmark(bench: dict[str, Any]) -> str:
    lines = [f"{'batch':>5} {'seq':>4} {'artifact ms':>11} {'seq/s':>9} {'source ms':>10} {'speedup':>8}"]
    for r in bench["results"]:
        src = r.get("source_latency_ms_p50")
        head = f"{r['batch_size']:>5} {r['sequence_length']:>4} {r['latency_ms_p50']:>11.2f}"
        tail = f"{src:>10.2f} {r['speedup_vs_source']:>7.2f}x" if src is not None else f"{'-':>10} {'-':>8}"
        lines.append(f"{head} {r['sequences_per_s']:>9.1f} {tail}")
    return "\n".join(lines)
