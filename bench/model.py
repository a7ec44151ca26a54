"""Model-level benchmark: sequences/s by batch size x sequence length for each artifact in the store,
next to the roofline of this CPU (its measured int8 and fp32 matrix-multiply peaks and the model's
operations per sequence, counted from the ONNX graph).

    .venv/bin/python -m bench.model              # every CPU artifact in model_store/ (~5-10 min)
    .venv/bin/python -m bench.model --quick      # smoke run
    .venv/bin/python -m bench.model --model path/to/model.onnx

Layouts: one session with 1 thread, one session with 2 threads, two 1-thread sessions side by side.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from bench.machine import describe, headline
from bench.paths import REPO_ROOT, RESULTS_DIR
from bench.roofline import (
    OpCount,
    count_ops,
    dummy_inputs,
    infer_activation_shapes,
    measure_peak,
    roofline_rate,
    vocab_size,
)
from bench.variants import read_artifacts

LAYOUTS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}  # name: (sessions, threads per session)
TARGET_FRACTION = 0.5


@dataclass(frozen=True)
class Peaks:
    """ops/s of the matrix-multiply kernels: per precision, for 1 core and for 2 cores."""

    int8_1: float
    fp32_1: float
    int8_2: float
    fp32_2: float

    def for_cores(self, cores: int) -> tuple[float, float]:
        return (self.int8_1, self.fp32_1) if cores == 1 else (self.int8_2, self.fp32_2)


@dataclass
class Cell:
    artifact: str
    precision: str
    layout: str
    batch_size: int
    sequence_length: int
    latency_ms_p50: float
    sequences_per_s: float
    gops_per_sequence: float
    achieved_gops: float
    roofline_sequences_per_s: float
    fraction_of_roofline: float
    fraction_of_int8_only_roofline: float


def measure_peaks(seconds: float, sizes: tuple[int, ...]) -> Peaks:
    def best(precision: str, threads: int, sessions: int) -> float:
        return max(measure_peak(precision, threads, n=n, seconds=seconds, sessions=sessions) for n in sizes)

    int8_1, fp32_1 = best("int8", 1, 1), best("fp32", 1, 1)
    int8_2 = max(best("int8", 2, 1), best("int8", 1, 2))
    fp32_2 = max(best("fp32", 2, 1), best("fp32", 1, 2))
    return Peaks(int8_1, fp32_1, int8_2, fp32_2)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_layout(
    sessions: list[Any], batch: int, seq: int, seconds: float, vocab: int | None = None
) -> tuple[float, float]:
    """(median ms per run, total sequences/s) of all sessions running the same shape side by side."""
    feeds = dummy_inputs([i.name for i in sessions[0].get_inputs()], batch, seq, vocab=vocab)
    for session in sessions:
        session.run(None, feeds)
    samples: list[list[float]] = [[] for _ in sessions]
    barrier = threading.Barrier(len(sessions))
    spans: list[float] = [0.0] * len(sessions)

    def loop(index: int) -> None:
        barrier.wait()
        begin = time.perf_counter()
        end = begin + seconds
        out = samples[index]
        while time.perf_counter() < end or len(out) < 3:
            start = time.perf_counter()
            sessions[index].run(None, feeds)
            out.append(time.perf_counter() - start)
        spans[index] = time.perf_counter() - begin

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(len(sessions))]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rate = sum(len(s) * batch / span for s, span in zip(samples, spans, strict=True))
    return statistics.median([x for s in samples for x in s]) * 1e3, rate


def op_counts(model: onnx.ModelProto, seqs: list[int]) -> dict[int, OpCount]:
    return {seq: count_ops(model, seq, activation_shapes=infer_activation_shapes(model, seq)) for seq in seqs}


def bench_artifact(
    name: str, precision: str, path: Path, peaks: Peaks, args: argparse.Namespace
) -> list[Cell]:
    model = onnx.load(str(path))
    counts = op_counts(model, args.seqs)
    vocab = vocab_size(model)
    del model
    cells: list[Cell] = []
    for layout in args.layouts:
        n_sessions, threads = LAYOUTS[layout]
        sessions = [_session(path, threads) for _ in range(n_sessions)]
        int8_peak, fp32_peak = peaks.for_cores(n_sessions * threads)
        for seq in args.seqs:
            count = counts[seq]
            limit = roofline_rate(count, int8_peak, fp32_peak)
            int8_only = int8_peak / count.total
            for batch in args.batches:
                latency, rate = time_layout(sessions, batch, seq, args.seconds, vocab)
                cell = Cell(
                    name,
                    precision,
                    layout,
                    batch,
                    seq,
                    latency,
                    rate,
                    count.total / 1e9,
                    rate * count.total / 1e9,
                    limit,
                    rate / limit,
                    rate / int8_only,
                )
                cells.append(cell)
                print(
                    f"{name:<28} {layout:>4} b{batch:<3} s{seq:<4} {latency:8.2f} ms {rate:9.1f} seq/s "
                    f"{cell.achieved_gops:7.1f} GOP/s  roofline {limit:8.1f} seq/s "
                    f"-> {cell.fraction_of_roofline:6.1%} "
                    f"(int8-only {cell.fraction_of_int8_only_roofline:6.1%})",
                    flush=True,
                )
        del sessions
    return cells


def target_lines(cells: list[Cell]) -> list[str]:
    out = []
    for name in dict.fromkeys(c.artifact for c in cells if c.precision == "int8"):
        for seq in (16, 128):
            mine = [c for c in cells if c.artifact == name and c.sequence_length == seq]
            if not mine:
                continue
            best = max(mine, key=lambda c: c.fraction_of_roofline)
            verdict = "PASS" if best.fraction_of_roofline >= TARGET_FRACTION else "FAIL"
            out.append(
                f"{verdict}  {name} int8 s{seq}: best {best.fraction_of_roofline:.1%} of the roofline "
                f"({best.layout} b{best.batch_size}, {best.sequences_per_s:.0f} seq/s; int8-only "
                f"roofline {best.fraction_of_int8_only_roofline:.1%}; target >= 50%)"
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store",
        type=Path,
        action="append",
        help="model store(s) to read (default: model_store/ and bench_results/built/)",
    )
    parser.add_argument("--model", type=Path, action="append", default=[], help="an ONNX file (repeatable)")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--seqs", default="16,64,128")
    parser.add_argument("--layouts", default="1x1,1x2,2x1")
    parser.add_argument("--seconds", type=float, default=1.0, help="measured seconds per cell")
    parser.add_argument("--peak-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="smoke run: short cells, b1/b8, s16/s128")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.peak_seconds, args.batches, args.seqs = 0.3, 0.5, "1,8", "16,128"
    args.batches = [int(b) for b in args.batches.split(",")]
    args.seqs = [int(s) for s in args.seqs.split(",")]
    args.layouts = [layout for layout in args.layouts.split(",") if layout]
    for layout in args.layouts:
        if layout not in LAYOUTS:
            parser.error(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    info = describe()
    command = "python -m bench.model " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(f"{command}\n{headline(info)}", flush=True)

    targets: list[tuple[str, str, Path]] = [(p.stem, "?", p) for p in args.model]
    if not args.model:
        stores = args.store or [REPO_ROOT / "model_store", RESULTS_DIR / "built"]
        for a in [a for store in stores for a in read_artifacts(store)]:
            if a.providers and "CPUExecutionProvider" not in a.providers:
                print(f"skipped {a.ref}: built for {', '.join(a.providers)}")
                continue
            onnx_file = json.loads((a.path / "manifest.json").read_text()).get("onnx_file", "model.onnx")
            label = f"{a.ref} {a.precision}{' pruned' if a.compressed else ''}"
            if RESULTS_DIR in a.path.parents:
                label += " (bench build)"
            targets.append((label, a.precision, a.path / onnx_file))
    if not targets:
        print("nothing to measure: no artifact in the stores and no --model")
        return 1
    sizes = (1024,) if args.quick else (1024, 2048)
    peaks = measure_peaks(args.peak_seconds, sizes)
    print(
        f"peaks (onnxruntime MatMulInteger u8s8 / MatMul fp32, {'x'.join(map(str, sizes))} squares): "
        f"1 core int8 {peaks.int8_1 / 1e9:.0f} GOP/s, fp32 {peaks.fp32_1 / 1e9:.0f} GFLOP/s; "
        f"2 cores int8 {peaks.int8_2 / 1e9:.0f} GOP/s, fp32 {peaks.fp32_2 / 1e9:.0f} GFLOP/s",
        flush=True,
    )
    cells: list[Cell] = []
    for name, precision, path in targets:
        if precision == "?":
            quantized = any(
                n.op_type
                in (
                    "MatMulIntegerToFloat",
                    "MatMulInteger",
                    "QAttention",
                    "QLinearMatMul",
                    "DequantizeLinear",
                )
                for n in onnx.load(str(path), load_external_data=False).graph.node
            )
            precision = "int8" if quantized else "fp32"
        cells.extend(bench_artifact(name, precision, path, peaks, args))
    lines = target_lines(cells)
    print()
    for line in lines:
        print(line)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    payload = {
        "command": command,
        "machine": info,
        "peaks_ops_per_s": asdict(peaks),
        "cells": [asdict(c) for c in cells],
        "targets": lines,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name in (f"model-{stamp}", "model-latest"):
        (args.out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}/model-{stamp}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
