"""The serving benchmark's outputs: a Markdown table, a JSON file, a PNG plot and the target check."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Targets of the performance issue (sentiment, one storefront text per request).
TARGETS = ((32, 15.0, 150.0), (64, 18.0, None))  # (concurrency, min ratio to baseline, max p99 ms)


@dataclass
class Row:
    """One cell: a server variant under one endpoint's load at one concurrency."""

    variant: str
    label: str
    endpoint: str
    concurrency: int
    texts_per_s: float
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    server_cpu_pct: float | None
    client_cpu_pct: float
    peak_rss_mb: float | None
    ratio: float | None = None
    mean_batch: float | None = None
    cache_hit_rate: float | None = None


def fill_ratios(rows: Sequence[Row], baseline: str = "baseline") -> None:
    """texts/s of every row divided by the baseline's at the same endpoint and concurrency."""
    base = {(r.endpoint, r.concurrency): r.texts_per_s for r in rows if r.variant == baseline}
    for row in rows:
        ref = base.get((row.endpoint, row.concurrency))
        row.ratio = row.texts_per_s / ref if ref else None


def _num(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def format_table(rows: Sequence[Row]) -> str:
    header = (
        "| server | endpoint | c | texts/s | req/s | p50 ms | p95 ms | p99 ms | err | server CPU % "
        "| client CPU % | peak RSS MB | × baseline |"
    )
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r.label} | {r.endpoint} | {r.concurrency} | {_num(r.texts_per_s)} "
            f"| {_num(r.requests_per_s, 1)} "
            f"| {_num(r.p50_ms, 1)} | {_num(r.p95_ms, 1)} | {_num(r.p99_ms, 1)} | {r.errors} "
            f"| {_num(r.server_cpu_pct)} | {_num(r.client_cpu_pct)} | {_num(r.peak_rss_mb)} "
            f"| {_num(r.ratio, 1) + '×' if r.ratio is not None else '-'} |"
        )
    return "\n".join(lines)


def target_lines(rows: Sequence[Row]) -> list[str]:
    """PASS/FAIL per service variant against the sentiment targets."""
    out = []
    for variant in dict.fromkeys(r.variant for r in rows if r.variant != "baseline"):
        for concurrency, min_ratio, max_p99 in TARGETS:
            cell = next(
                (
                    r
                    for r in rows
                    if r.variant == variant and r.endpoint == "sentiment" and r.concurrency == concurrency
                ),
                None,
            )
            if cell is None or cell.ratio is None:
                continue
            ok = cell.ratio >= min_ratio and (max_p99 is None or cell.p99_ms <= max_p99)
            want = f">= {min_ratio:.0f}x baseline" + (f", p99 <= {max_p99:.0f} ms" if max_p99 else "")
            out.append(
                f"{'PASS' if ok else 'FAIL'}  {cell.label}, sentiment c={concurrency}: "
                f"{cell.ratio:.1f}x, p99 {cell.p99_ms:.0f} ms (target {want})"
            )
    return out


def write_json(path: Path, meta: dict[str, Any], rows: Sequence[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2, default=str))


def _positive(value: float | None) -> bool:
    return value is not None and not math.isnan(value) and value > 0


def plot_png(path: Path, rows: Sequence[Row], title: str) -> None:
    """texts/s (log scale) and p99 latency against concurrency, one panel pair per endpoint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    endpoints = list(dict.fromkeys(r.endpoint for r in rows))
    if not endpoints:
        return
    fig, axes = plt.subplots(2, len(endpoints), figsize=(5.5 * len(endpoints), 8), squeeze=False)
    for col, endpoint in enumerate(endpoints):
        cells = [r for r in rows if r.endpoint == endpoint]
        for label in dict.fromkeys(r.label for r in cells):
            series = sorted((r for r in cells if r.label == label), key=lambda r: r.concurrency)
            style = "k--" if series[0].variant == "baseline" else "-"
            for panel, values in enumerate(([r.texts_per_s for r in series], [r.p99_ms for r in series])):
                points = [(r.concurrency, v) for r, v in zip(series, values, strict=True) if _positive(v)]
                if points:
                    axes[panel][col].plot(*zip(*points, strict=True), style, marker="o", label=label)
        axes[0][col].set_title(f"{endpoint}: texts/s")
        axes[1][col].set_title(f"{endpoint}: p99 latency (ms)")
        for row in (0, 1):
            axes[row][col].set_xscale("log", base=2)
            if axes[row][col].lines:
                axes[row][col].set_yscale("log")
            axes[row][col].set_xlabel("concurrency (closed loop)")
            axes[row][col].grid(True, which="both", alpha=0.3)
    if axes[0][0].lines:
        axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
