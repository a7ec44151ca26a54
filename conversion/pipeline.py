"""The conversion pipeline: load -> export -> parity -> optimize -> precision -> validate -> bench -> publish.

`prepare` runs every step up to publication in a work folder and returns a BuildResult (the sweep compares
several); `publish_result` publishes one; `build` does both. Any refusal raises a ConversionError before
the store is touched.
"""

from __future__ import annotations

import dataclasses
import platform
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from conversion.compress import compress, wants_compression
from conversion.errors import ValidationGateError
from conversion.kinds import TASK_OF_KIND
from conversion.recipe import Recipe, SmoothConfig

STEPS = ("load", "export", "parity", "optimize", "precision", "validate", "benchmark", "publish")


def step_count(recipe: Recipe) -> int:
    """The steps a build of `recipe` prints: STEPS, plus compress and smooth when the recipe asks for them."""
    return len(STEPS) + int(wants_compression(recipe)) + int(recipe.quantize.smooth_ffn_inputs is not None)


SHORT_TEXTS = ["Ok", "Thanks!", "Battery died after two days.", "wireless earbuds"]


class Progress:
    """One line per step with its timing, on stderr; loops inside steps show tqdm bars."""

    def __init__(self, total: int = len(STEPS), stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.index, self.enabled = total, 0, enabled
        self.stream = stream or sys.stderr

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        self.index += 1
        start = time.perf_counter()
        if self.enabled:
            print(f"[{self.index}/{self.total}] {name} {detail}".rstrip(), file=self.stream, flush=True)
        try:
            yield
        except BaseException:
            if self.enabled:
                print(
                    f"[{self.index}/{self.total}] {name} FAILED after {time.perf_counter() - start:.1f}s",
                    file=self.stream,
                    flush=True,
                )
            raise
        if self.enabled:
            print(
                f"[{self.index}/{self.total}] {name} done in {time.perf_counter() - start:.1f}s",
                file=self.stream,
                flush=True,
            )


@dataclass
class BuildResult:
    recipe: Recipe
    onnx_path: Path
    tokenizer_path: Path
    manifest: dict[str, Any]
    work_dir: Path
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.manifest["validation"]["passed"])


def tool_versions() -> dict[str, str]:
    names = ("torch", "transformers", "onnx", "onnxruntime", "tokenizers", "optimum-onnx", "numpy")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def smoothed(model: Any, recipe: Recipe, cfg: SmoothConfig, *, copy: bool) -> Any:
    """`model` (a LoadedCheckpoint) with its FFN inputs smoothed (conversion/smooth.py), copied if `copy`."""
    from conversion.compress import token_batches
    from conversion.smooth import smooth_ffn_inputs

    if copy:
        model = dataclasses.replace(model, module=deepcopy(model.module))
    if recipe.distill is not None:
        from conversion.finetune import DEFAULT_LABELS, read_training_data

        texts = read_training_data(recipe.distill.training_data(), DEFAULT_LABELS)[0].texts
    else:
        from conversion.data.sentiment import calibration_texts

        texts = calibration_texts(recipe.quantize.calibration_dataset, cfg.texts)
    texts = random.Random(cfg.seed).sample(list(texts), min(cfg.texts, len(texts)))
    hf = getattr(model.module, "model", model.module)  # conversion.modeling.InferenceModule wraps it
    batches = token_batches(model.tokenizer, texts, recipe.max_sequence_length)
    for line in smooth_ffn_inputs(hf, batches, cfg.alpha):
        print(f"    {line.describe()}", flush=True)
    return model


def parity_texts(recipe: Recipe, count: int) -> list[Any]:
    """Real texts of mixed lengths (SST-2 train sentences, WANDS queries, very short texts)."""
    from conversion.data.ranking import load_ranking
    from conversion.data.sentiment import load_sentiment

    sentences = load_sentiment("sst2_train", max_examples=count).texts
    ranking = load_ranking(max_queries=count, pool_reviews=0)
    if recipe.kind == "cross-encoder":
        rng = random.Random(0)
        return [(q, rng.choice(ranking.pool)) for q in ranking.queries][:count]
    texts = SHORT_TEXTS + [t for pair in zip(sentences, ranking.queries, strict=False) for t in pair]
    return texts[:count]


def serving_tokenizer(tokenizer_json: str, max_length: int) -> str:
    """The checkpoint's fast tokenizer without fixed-length padding (the service pads per batch),
    truncating at the manifest's max_sequence_length."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    text: str = tokenizer.to_str()
    return text


HEADLINE_METRIC = {
    "sequence-classification": "accuracy",
    "bi-encoder": "ndcg@10_vs_source",
    "cross-encoder": "ndcg@10_vs_source",
}
SPEEDUP_POINTS = ((1, 64), (8, 64))


def versus_teacher(recipe: Recipe, validation: dict[str, Any], benchmark: dict[str, Any]) -> dict[str, Any]:
    """The headline of the manifest: the artifact against its fp32 source (the teacher) on the kind's
    headline metric (every gate set, and the worst), and its speed against the PyTorch source at batch 1
    and 8 of 64 tokens (when the benchmark measured them)."""
    name = recipe.validation.headline_metric or HEADLINE_METRIC[recipe.kind]
    rows = [m for m in validation.get("metrics", []) if m["metric"] == name]
    deltas = {m["dataset"]: round(m["delta"], 4) for m in rows}
    worst = min(rows, key=lambda m: m["delta"]) if rows else None
    speedup = {
        f"batch{r['batch_size']}_seq{r['sequence_length']}": r["speedup_vs_source"]
        for r in benchmark.get("results", [])
        if (r["batch_size"], r["sequence_length"]) in SPEEDUP_POINTS and "speedup_vs_source" in r
    }
    return {
        "teacher": recipe.source,
        "metric": name,
        "worst_dataset": worst["dataset"] if worst else None,
        "worst_delta": round(worst["delta"], 4) if worst else None,
        "deltas": deltas,
        "speedup": speedup or None,
        "speedup_baseline": benchmark.get("source_runtime"),
    }


def _file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


def prepare(
    recipe: Recipe, work_dir: Path, *, base_dir: Path | None = None, progress: Progress | None = None
) -> BuildResult:
    """Every step but publication; raises ParityError / ValidationGateError / CheckpointError on refusal."""
    from conversion.bench import run_benchmark
    from conversion.checkpoint import load_checkpoint
    from conversion.export import export_onnx
    from conversion.optimize import optimize_onnx
    from conversion.parity import check_parity
    from conversion.quantize import TextCalibrationReader, apply_precision
    from conversion.validate import format_table, validate_artifact

    progress = progress or Progress(total=step_count(recipe))
    source_path = recipe.source_path(base_dir)
    timings: dict[str, float] = {}
    work_dir.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    with progress.step("load", str(source_path)):
        loaded = load_checkpoint(source_path, recipe.kind, recipe.labels)
    timings["load"] = time.perf_counter() - t
    # `loaded` (the source) is the reference of the gate and the benchmark; `model` is what gets exported.
    model = loaded
    compression: dict[str, Any] | None = None
    if wants_compression(recipe):
        t = time.perf_counter()
        with progress.step("compress", "prune/factorize + recovery distillation"):
            model, compression = compress(loaded, recipe)
        timings["compress"] = time.perf_counter() - t
    if recipe.quantize.smooth_ffn_inputs is not None:
        with progress.step("smooth", "FFN inputs' outliers into the weights, before int8"):
            model = smoothed(model, recipe, recipe.quantize.smooth_ffn_inputs, copy=model is loaded)
    config = model.config
    pruned = bool(config.get("pruned_heads")) or bool(config.get("factorized"))

    fp32_path = work_dir / "model.fp32.onnx"
    t = time.perf_counter()
    with progress.step("export", f"opset {recipe.opset}, dynamo=False"):
        export_onnx(
            model.module, fp32_path, opset=recipe.opset, vocab_size=int(config.get("vocab_size", 100))
        )
    timings["export"] = time.perf_counter() - t

    texts = parity_texts(recipe, recipe.parity.texts)

    def parity_of(graph: Path, raise_on_failure: bool = True) -> dict[str, Any]:
        return check_parity(
            model,
            graph,
            texts,
            max_length=recipe.max_sequence_length,
            atol=recipe.parity.atol,
            batch_size=recipe.parity.batch_size,
            raise_on_failure=raise_on_failure,
        ).as_dict()

    parity: dict[str, Any] = {}
    t = time.perf_counter()
    with progress.step("parity", f"{len(texts)} texts, atol {recipe.parity.atol:g}"):
        parity["export"] = parity_of(fp32_path)
    timings["parity"] = time.perf_counter() - t

    graph = fp32_path
    optimization: dict[str, Any] = {"applied": False}
    t = time.perf_counter()
    with progress.step("optimize", "onnxruntime.transformers.optimizer" if recipe.optimize else "(off)"):
        if recipe.optimize and recipe.quantize.method == "static":
            optimization["reason"] = "static QDQ quantizes the unfused graph; onnxruntime fuses QDQ at load"
        elif recipe.optimize:
            graph = work_dir / "model.opt.onnx"
            heads = 0 if pruned else int(config.get("num_attention_heads", 0))
            hidden = 0 if pruned else int(config.get("hidden_size", 0))
            on_cpu = recipe.provider == "CPUExecutionProvider"
            fused = optimize_onnx(
                fp32_path, graph, num_heads=heads, hidden_size=hidden, unfuse_skip_layernorms=on_cpu
            )
            optimization = {"applied": True, "fused_ops": fused, "skip_layernorm_unfused": on_cpu}
            parity["optimized"] = parity_of(graph)
    timings["optimize"] = time.perf_counter() - t

    artifact = work_dir / "model.onnx"
    t = time.perf_counter()
    with progress.step("precision", f"{recipe.quantize.method} -> {recipe.quantize.precision}"):
        reader = None
        if recipe.quantize.method == "static":
            from conversion.data.sentiment import calibration_texts

            calib = calibration_texts(recipe.quantize.calibration_dataset, recipe.quantize.calibration_texts)
            reader = TextCalibrationReader(
                model.tokenizer,
                calib,
                max_length=recipe.max_sequence_length,
                input_names=model.module.input_names,
            )
        apply_precision(recipe.quantize, graph, artifact, reader)
        parity["artifact"] = parity_of(artifact, raise_on_failure=False)
        parity["artifact"]["gated"] = False
    timings["precision"] = time.perf_counter() - t
    if progress.enabled:
        print(
            f"    size: fp32 {_file_mb(fp32_path):.1f} MB -> artifact {_file_mb(artifact):.1f} MB",
            file=progress.stream,
        )

    validation: dict[str, Any]
    t = time.perf_counter()
    with progress.step("validate", "(off)" if not recipe.validation.enabled else ""):
        if recipe.validation.enabled:
            report = validate_artifact(loaded, artifact, recipe)
            if progress.enabled:
                print(format_table(report), file=progress.stream, flush=True)
            validation = report.as_dict()
        else:
            validation = {"passed": True, "metrics": [], "skipped": "validation disabled in the recipe"}
        validation["parity"] = parity
        validation["validated_on"] = "CPUExecutionProvider"
        if recipe.validation.enabled and not report.passed:
            failed = [f"{m.dataset} {m.metric}" for m in report.metrics if not m.passed]
            raise ValidationGateError(f"{recipe.name}: past its budget on {', '.join(failed)}", report)
    timings["validate"] = time.perf_counter() - t

    benchmark: dict[str, Any] = {
        "provider": recipe.provider,
        "threads": recipe.benchmark.threads,
        "results": [],
    }
    t = time.perf_counter()
    with progress.step("benchmark", "(off)" if not recipe.benchmark.enabled else ""):
        if recipe.benchmark.enabled:
            from conversion.bench import format_benchmark

            benchmark = run_benchmark(
                artifact,
                recipe.benchmark,
                provider=recipe.provider,
                input_names=model.module.input_names,
                vocab_size=int(config.get("vocab_size", 100)),
                source_module=loaded.module,
            )
            if progress.enabled:
                print(format_benchmark(benchmark), file=progress.stream, flush=True)
    timings["benchmark"] = time.perf_counter() - t

    tokenizer_path = work_dir / "tokenizer.json"
    tokenizer_path.write_text(serving_tokenizer(loaded.tokenizer_json, recipe.max_sequence_length), "utf-8")
    manifest: dict[str, Any] = {
        "schema_version": 1,
        "name": recipe.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "task": TASK_OF_KIND[recipe.kind],
        "model_kind": recipe.kind,
        "labels": loaded.labels,
        "pooling": "mean" if recipe.kind == "bi-encoder" else None,
        "normalize": recipe.kind == "bi-encoder",
        "pooling_in_graph": recipe.kind == "bi-encoder",
        "user_tower": recipe.user_tower.model_dump(mode="json") if recipe.kind == "bi-encoder" else None,
        "max_sequence_length": recipe.max_sequence_length,
        "onnx_file": "model.onnx",
        "tokenizer_file": "tokenizer.json",
        "inputs": loaded.module.input_names,
        "outputs": [loaded.module.output_name],
        "opset": recipe.opset,
        "precision": recipe.quantize.precision,
        "execution_providers": [recipe.provider],
        "recipe": recipe.model_dump(mode="json"),
        "source": {"path": str(source_path), "sha256": loaded.sha256},
        "tool_versions": tool_versions(),
        "compression": compression,
        "optimization": optimization,
        "validation": validation,
        "benchmark": benchmark,
        "versus_teacher": versus_teacher(recipe, validation, benchmark),
        "size_bytes": artifact.stat().st_size,
        "fp32_size_bytes": fp32_path.stat().st_size,
        "build_seconds": {k: round(v, 2) for k, v in timings.items()},
    }
    return BuildResult(recipe, artifact, tokenizer_path, manifest, work_dir, timings)


def publish_result(result: BuildResult, store_root: Path, progress: Progress | None = None) -> Path:
    from conversion.publish import publish_version

    progress = progress or Progress()
    with progress.step("publish", str(store_root / result.recipe.name)):
        files = {"model.onnx": result.onnx_path, "tokenizer.json": result.tokenizer_path}
        path = publish_version(store_root, result.recipe.name, files, result.manifest)
    if progress.enabled:
        print(f"published {path}", file=progress.stream, flush=True)
    return path


def build(recipe: Recipe, store_root: Path, *, base_dir: Path | None = None, quiet: bool = False) -> Path:
    """Builds, validates, benchmarks and publishes `recipe`; returns the new version's folder."""
    progress = Progress(total=step_count(recipe), enabled=not quiet)
    with tempfile.TemporaryDirectory(prefix=f"build-{recipe.name}-") as tmp:
        result = prepare(recipe, Path(tmp), base_dir=base_dir, progress=progress)
        return publish_result(result, store_root, progress)
