"""Sweep: build several recipes without publishing, gate each, compare accuracy / latency / size, and publish
the fastest one that passes (per model name).

Latency is the mean of each artifact's median latencies over the benchmark points every recipe shares;
speedup is the geometric mean, over those points, of the first recipe's latency over this one's (put the
plain int8 recipe first to read speedups over int8).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conversion.errors import ConversionError, ValidationGateError
from conversion.pipeline import BuildResult, Progress, prepare, publish_result, step_count
from conversion.recipe import Recipe, load_recipe

Point = tuple[int, int]


@dataclass
class SweepRow:
    recipe_path: Path
    name: str
    passed: bool
    error: str | None = None
    metric: dict[str, Any] | None = None  # the gated metric closest to (or furthest past) its budget
    size_mb: float | None = None
    latencies: dict[Point, float] = field(default_factory=dict)
    latency_ms: float | None = None
    speedup: float | None = None
    published: Path | None = None

    @property
    def label(self) -> str:
        return self.recipe_path.name.removesuffix(".yaml")


def _margin(m: dict[str, Any]) -> float:
    """How far a metric is inside its budget (negative: past it), in the metric's own units."""
    if m.get("budget") is None or m.get("budget_kind") == "none":
        return math.inf
    if m["budget_kind"] == "max_drop":
        return float(m["delta"]) + float(m["budget"])
    return float(m["artifact"]) - float(m["budget"])


def headline_metric(metrics: list[dict[str, Any]]) -> dict[str, Any] | None:
    gated = [m for m in metrics if m.get("budget") is not None and m.get("budget_kind") != "none"]
    return min(gated, key=_margin) if gated else (metrics[0] if metrics else None)


def _latencies(benchmark: dict[str, Any]) -> dict[Point, float]:
    return {(r["batch_size"], r["sequence_length"]): float(r["latency_ms_p50"]) for r in benchmark["results"]}


def _benchmark_failed_build(recipe: Recipe, work_dir: Path, base_dir: Path | None) -> dict[str, Any]:
    """A build refused by the gate stops before its benchmark; measure its artifact anyway (same grid)."""
    import json

    from conversion.bench import run_benchmark
    from conversion.runners import ort_session

    artifact = work_dir / "model.onnx"
    inputs = [i.name for i in ort_session(artifact).get_inputs()]
    config = json.loads((recipe.source_path(base_dir) / "config.json").read_text(encoding="utf-8"))
    return run_benchmark(
        artifact,
        recipe.benchmark.model_copy(update={"compare_source": False}),
        provider=recipe.provider,
        input_names=inputs,
        vocab_size=int(config.get("vocab_size", 100)),
    )


def build_row(path: Path, work_dir: Path, base_dir: Path | None) -> tuple[SweepRow, BuildResult | None]:
    """Builds one recipe up to (not including) publication; a refusal becomes a row that did not pass."""
    recipe = load_recipe(path)
    row = SweepRow(path, recipe.name, passed=False)
    print(f"\n=== sweep: {path.name} ===", flush=True)
    try:
        result = prepare(recipe, work_dir, base_dir=base_dir, progress=Progress(total=step_count(recipe)))
    except ValidationGateError as exc:
        row.error = str(exc)
        report: Any = exc.report
        row.metric = headline_metric(report.as_dict()["metrics"])
        artifact = work_dir / "model.onnx"
        if artifact.is_file() and recipe.benchmark.enabled:
            row.size_mb = artifact.stat().st_size / 1e6
            row.latencies = _latencies(_benchmark_failed_build(recipe, work_dir, base_dir))
        return row, None
    except ConversionError as exc:
        row.error = str(exc)
        return row, None
    row.passed = result.passed
    row.metric = headline_metric(result.manifest["validation"]["metrics"])
    row.size_mb = result.manifest["size_bytes"] / 1e6
    row.latencies = _latencies(result.manifest["benchmark"])
    return row, result


def summarise(rows: list[SweepRow]) -> None:
    """Fills latency (mean over shared points) and speedup (geometric mean vs the first measured row)."""
    measured = [r for r in rows if r.latencies]
    if not measured:
        return
    shared = set.intersection(*(set(r.latencies) for r in measured))
    if not shared:
        return
    base = measured[0]
    for r in measured:
        r.latency_ms = sum(r.latencies[p] for p in shared) / len(shared)
        logs = [math.log(base.latencies[p] / r.latencies[p]) for p in shared]
        r.speedup = math.exp(sum(logs) / len(logs))


def format_sweep(rows: list[SweepRow]) -> str:
    head = (
        f"{'recipe':<36} {'metric':<32} {'source':>7} {'artifact':>8} {'delta':>7} "
        f"{'MB':>6} {'ms':>8} {'speedup':>7}  result"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        m = r.metric
        metric = f"{m['dataset']} {m['metric']}" if m else "-"
        nums = (
            f"{m['source']:>7.4f} {m['artifact']:>8.4f} {m['delta']:>+7.4f}"
            if m
            else f"{'-':>7} {'-':>8} {'-':>7}"
        )
        size = f"{r.size_mb:>6.1f}" if r.size_mb is not None else f"{'-':>6}"
        ms = f"{r.latency_ms:>8.2f}" if r.latency_ms is not None else f"{'-':>8}"
        speed = f"{r.speedup:>6.2f}x" if r.speedup is not None else f"{'-':>7}"
        result = "PASSED" if r.passed else "FAILED"
        if r.published is not None:
            result += f", published {r.published}"
        elif r.error and not r.metric:
            result += f": {r.error.splitlines()[0][:80]}"
        lines.append(f"{r.label:<36} {metric:<32} {nums} {size} {ms} {speed}  {result}")
    return "\n".join(lines)


def plot_sweep(rows: list[SweepRow], path: Path) -> Path:
    """Artifact metric vs latency; marker area grows with the file size; green passed, red failed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r.metric is not None and r.latency_ms is not None]
    fig, ax = plt.subplots(figsize=(8, 5))
    for r in points:
        assert r.metric is not None
        assert r.latency_ms is not None
        size = 20 + 6 * (r.size_mb or 0)
        ax.scatter(
            r.latency_ms, r.metric["artifact"], s=size, c="tab:green" if r.passed else "tab:red", alpha=0.7
        )
        ax.annotate(f"{r.label}\n{r.size_mb or 0:.1f} MB", (r.latency_ms, r.metric["artifact"]), fontsize=7)
    sources = {(r.metric["dataset"], r.metric["metric"]): r.metric["source"] for r in points if r.metric}
    for (dataset, name), value in sources.items():
        ax.axhline(value, color="grey", linestyle="--", linewidth=0.8)
        ax.annotate(f"source {dataset} {name}", (ax.get_xlim()[0], value), fontsize=7, color="grey")
    ax.set_xlabel("latency, mean over the benchmark grid (ms, onnxruntime)")
    ax.set_ylabel("gated metric of the artifact (closest to its budget)")
    ax.set_title("sweep: accuracy vs latency (marker size ~ model size; green passed the gate)")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_sweep(
    recipes: list[Path],
    store_root: Path,
    publish_best: bool = True,
    plot_path: Path | None = None,
    base_dir: Path | None = None,
) -> list[SweepRow]:
    """Builds every recipe, prints the table, plots it, and publishes the fastest passing build per name."""
    if not recipes:
        raise ConversionError("sweep: no recipes given")
    rows: list[SweepRow] = []
    results: dict[int, BuildResult] = {}
    with tempfile.TemporaryDirectory(prefix="sweep-") as tmp:
        for i, path in enumerate(recipes):
            row, result = build_row(path, Path(tmp) / f"{i}-{path.stem}", base_dir)
            rows.append(row)
            if result is not None:
                results[i] = result
        summarise(rows)
        if publish_best:
            for name in dict.fromkeys(r.name for r in rows):
                candidates = [i for i, r in enumerate(rows) if r.name == name and r.passed and i in results]
                if candidates:
                    best = min(candidates, key=lambda i: rows[i].latency_ms or math.inf)
                    rows[best].published = publish_result(results[best], store_root, Progress(total=1))
    print()
    print(format_sweep(rows))
    if plot_path is not None:
        print(f"plot: {plot_sweep(rows, plot_path)}")
        print(f"rows: {write_rows(rows, plot_path.with_suffix('.json'))}")
    return rows


def write_rows(rows: list[SweepRow], path: Path) -> Path:
    """Every row with its latency per (batch, sequence) point, for later comparison."""
    import json

    data = [
        {
            "recipe": str(r.recipe_path),
            "name": r.name,
            "passed": r.passed,
            "error": r.error,
            "metric": r.metric,
            "size_mb": r.size_mb,
            "latency_ms": r.latency_ms,
            "speedup": r.speedup,
            "published": str(r.published) if r.published else None,
            "latencies": [
                {"batch_size": b, "sequence_length": s, "latency_ms_p50": ms}
                for (b, s), ms in r.latencies.items()
            ],
        }
        for r in rows
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path
