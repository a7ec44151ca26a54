"""The student table: the served `review-sentiment` student against the plain int8 and the fp32 builds of
its teacher, side by side in one run: size, accuracy on every gate set (from each build's own gate, all
against the same fp32 teacher), and latency at batch 1 and 8 (one session, one thread, cells interleaved).

    .venv/bin/python -m bench.student      # after `python -m bench.prepare_store` (run by `make bench`)

Checks printed: the student within 1.0 point of the fp32 teacher on every gate set, at least 1.8x the
plain int8 teacher at batch 1 x 64 and batch 8 x 64 tokens, at most 25% of the fp32 teacher's ONNX size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import describe, headline
from bench.model import _session, time_layout
from bench.paths import REPO_ROOT, RESULTS_DIR
from bench.variants import Artifact, pick_sentiment, read_artifacts

SHAPES = ((1, 16), (1, 64), (8, 64), (32, 64))
CHECKED_SHAPES = ((1, 64), (8, 64))
MIN_SPEEDUP = 1.8
MAX_SIZE_FRACTION = 0.25
ACCURACY_BUDGET = 1.0


@dataclass(frozen=True)
class Row:
    label: str
    artifact: Artifact
    manifest: dict[str, Any]

    @property
    def onnx(self) -> Path:
        return self.artifact.path / str(self.manifest.get("onnx_file", "model.onnx"))

    def accuracy(self) -> dict[str, tuple[float, float]]:
        """Gate set: (fp32 teacher, this build), from the build's own gate."""
        metrics = (self.manifest.get("validation") or {}).get("metrics", [])
        return {m["dataset"]: (m["source"], m["artifact"]) for m in metrics if m["metric"] == "accuracy"}


def _rows(stores: list[Path]) -> list[Row]:
    picked = pick_sentiment([a for store in stores for a in read_artifacts(store)])
    labels = {"fp32": "fp32 teacher", "int8": "int8 teacher", "pruned-int8": "int8 student"}
    rows = []
    for key, label in labels.items():
        artifact = picked[key]
        if artifact is None:
            print(f"no {label} build in {', '.join(map(str, stores))}: run `python -m bench.prepare_store`")
            continue
        rows.append(Row(label, artifact, json.loads((artifact.path / "manifest.json").read_text())))
    return rows


def measure(rows: list[Row], rounds: int, seconds: float) -> dict[tuple[str, int, int], float]:
    """Median ms per run of each row and shape over `rounds` interleaved passes."""
    sessions = {row.label: _session(row.onnx, 1) for row in rows}
    samples: dict[tuple[str, int, int], list[float]] = {}
    for _ in range(rounds):
        for batch, seq in SHAPES:
            for row in rows:
                ms, _ = time_layout([sessions[row.label]], batch, seq, seconds)
                samples.setdefault((row.label, batch, seq), []).append(ms)
    return {key: statistics.median(values) for key, values in samples.items()}


def report(rows: list[Row], latency: dict[tuple[str, int, int], float]) -> list[str]:
    by_label = {row.label: row for row in rows}
    fp32 = by_label.get("fp32 teacher")
    int8 = by_label.get("int8 teacher")
    # The fp32 build is the teacher itself (parity-checked, not gated): its accuracy is the gates' source.
    teacher = {s: (v[0], v[0]) for s, v in next((r.accuracy() for r in rows if r.accuracy()), {}).items()}
    sets = list(teacher)
    head = f"{'build':<13} {'MB':>6} {'% fp32':>6} " + " ".join(f"{s[:14]:>14}" for s in sets)
    head += "".join(f" {f'b{b}xs{s} ms':>11}" for b, s in SHAPES)
    lines = ["accuracy (%) on each gate set, latency (ms, 1 thread) by batch x tokens", head]
    for row in rows:
        size = (row.manifest.get("size_bytes") or 0) / 1e6
        share = f"{100 * size / ((fp32.manifest.get('size_bytes') or 1) / 1e6):>5.1f}%" if fp32 else "     -"
        accuracy = row.accuracy() or (teacher if row is fp32 else {})
        cells = " ".join(f"{accuracy[s][1]:>14.2f}" if s in accuracy else f"{'-':>14}" for s in sets)
        times = "".join(f" {latency[(row.label, b, s)]:>11.2f}" for b, s in SHAPES)
        lines.append(f"{row.label:<13} {size:>6.1f} {share} {cells}{times}")
    student = by_label.get("int8 student")
    if student is None:
        return lines
    lines.append("")
    for name, (source, value) in student.accuracy().items():
        ok = value - source >= -ACCURACY_BUDGET
        lines.append(
            f"{'PASS' if ok else 'FAIL'}  student {name}: {value:.2f} vs fp32 teacher {source:.2f} "
            f"({value - source:+.2f}; budget -{ACCURACY_BUDGET:g})"
        )
    if int8 is not None:
        for b, t in CHECKED_SHAPES:
            ratio = latency[(int8.label, b, t)] / latency[(student.label, b, t)]
            verdict = "PASS" if ratio >= MIN_SPEEDUP else "FAIL"
            lines.append(
                f"{verdict}  student b{b}xs{t}: {ratio:.2f}x the plain int8 teacher (target {MIN_SPEEDUP}x)"
            )
    if fp32 is not None:
        fraction = (student.manifest.get("size_bytes") or 0) / (fp32.manifest.get("size_bytes") or 1)
        verdict = "PASS" if fraction <= MAX_SIZE_FRACTION else "FAIL"
        lines.append(
            f"{verdict}  student size: {100 * fraction:.1f}% of the fp32 teacher's ONNX "
            f"(target <= {100 * MAX_SIZE_FRACTION:.0f}%)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store", type=Path, action="append", help="default: model_store/ and the bench builds"
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved passes over every cell")
    parser.add_argument("--seconds", type=float, default=0.5, help="measured seconds per cell and pass")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    print(headline(describe()), flush=True)
    rows = _rows(args.store or [REPO_ROOT / "model_store", RESULTS_DIR / "built"])
    if not rows:
        return 1
    for row in rows:
        print(f"{row.label}: {row.artifact.ref} at {row.artifact.path}", flush=True)
    lines = report(rows, measure(rows, args.rounds, args.seconds))
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (args.out / f"student-{stamp}.md").write_text("```\n" + "\n".join(lines) + "\n```\n", encoding="utf-8")
    return 0 if not any(line.startswith("FAIL") for line in lines) else 1


if __name__ == "__main__":
    raise SystemExit(main())
