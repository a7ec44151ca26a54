"""Which servers the serving benchmark compares, read from the model store's manifests.

Rows: the PyTorch baseline; then the service with the fp32 ONNX, the int8 and the best pruned/distilled
int8 sentiment artifact, each with batching on and off. A variant whose artifact is not in the store is
skipped with the reason printed (build it with `python -m conversion.cli build <recipe>`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.paths import REPO_ROOT

SENTIMENT_MODEL = "review-sentiment"
EMBEDDER_MODEL = "product-embedder"
RECIPES_DIR = REPO_ROOT / "model_store" / "recipes"
PRUNED_RECIPE = f"{SENTIMENT_MODEL}.yaml"  # the default: the pruned and distilled student
INT8_RECIPE = f"{SENTIMENT_MODEL}.int8.yaml"  # the plain int8 teacher, for comparison
_COMPRESSED_MARKERS = ("prun", "distil", "student", "small")


@dataclass(frozen=True)
class Artifact:
    name: str
    version: str
    task: str
    precision: str
    recipe: dict[str, Any]
    source: str
    providers: tuple[str, ...]
    validation_passed: bool | None
    size_bytes: int | None
    path: Path

    @property
    def ref(self) -> str:
        return f"{self.name}={self.version}"

    @property
    def compressed(self) -> bool:
        """Pruned, distilled or layer-dropped (not just quantized): read from its recipe and source."""
        recipe = self.recipe
        for key in ("prune", "pruning", "distill", "distillation", "drop_layers", "factorize", "svd"):
            value = recipe.get(key)
            if value in (None, False, {}, [], 0):
                continue
            if isinstance(value, dict) and (value.get("enabled") is False or value.get("method") == "none"):
                continue
            return True
        text = f"{self.name} {self.source}".lower()
        return any(marker in text for marker in _COMPRESSED_MARKERS)

    @property
    def quantize_method(self) -> str:
        quantize = self.recipe.get("quantize")
        return str(quantize.get("method", "")) if isinstance(quantize, dict) else ""


def read_artifacts(store: Path) -> list[Artifact]:
    """Every published version (manifest.json present) in the store, oldest first per name."""
    found: list[Artifact] = []
    if not store.is_dir():
        return found
    for manifest_path in sorted(store.glob("*/*/manifest.json")):
        if any(part.startswith(".") for part in manifest_path.relative_to(store).parts):
            continue
        try:
            data = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "name" not in data or "version" not in data:
            continue
        validation = data.get("validation")
        source = data.get("source")
        recipe = data.get("recipe")
        found.append(
            Artifact(
                name=str(data["name"]),
                version=str(data["version"]),
                task=str(data.get("task", "")),
                precision=str(data.get("precision", "")),
                recipe=recipe if isinstance(recipe, dict) else {},
                source=str(source.get("path", "")) if isinstance(source, dict) else str(source or ""),
                providers=tuple(data.get("execution_providers") or ()),
                validation_passed=validation.get("passed") if isinstance(validation, dict) else None,
                size_bytes=data.get("size_bytes"),
                path=manifest_path.parent,
            )
        )
    return sorted(found, key=lambda a: (a.name, int(a.version) if a.version.isdigit() else 0))


def _newest(candidates: list[Artifact]) -> Artifact | None:
    return candidates[-1] if candidates else None


def _cpu(a: Artifact) -> bool:
    return not a.providers or "CPUExecutionProvider" in a.providers


def pick_sentiment(
    artifacts: list[Artifact], pruned_recipe: Path | None = None
) -> dict[str, Artifact | None]:
    """fp32, int8 (dynamic preferred) and the fastest pruned/distilled int8 sentiment artifact for the CPU;
    with `pruned_recipe`, the fastest of the builds of that recipe when there is one (not a stale student)."""
    plain = [a for a in _servable_sentiment(artifacts) if not a.compressed]
    int8 = [a for a in plain if a.precision == "int8"]
    dynamic = [a for a in int8 if a.quantize_method == "dynamic"]
    pruned = pruned_sentiment(artifacts)
    if pruned_recipe is not None:
        settings = compression_settings(pruned_recipe)
        pruned = [a for a in pruned if built_from(a, settings)] or pruned
    return {
        "fp32": _newest([a for a in plain if a.precision == "fp32"]),
        "int8": _newest(dynamic) or _newest(int8),
        "pruned-int8": _best_by_speed(pruned),
    }


def _servable_sentiment(artifacts: list[Artifact]) -> list[Artifact]:
    return [a for a in artifacts if a.task == "sentiment" and _cpu(a) and a.validation_passed is not False]


def pruned_sentiment(artifacts: list[Artifact]) -> list[Artifact]:
    """The candidates of row (d): gated, CPU, pruned/distilled int8 sentiment versions."""
    return [a for a in _servable_sentiment(artifacts) if a.compressed and a.precision == "int8"]


COMPRESSION_SECTIONS = ("prune", "factorize", "distill", "quantize")


def compression_settings(recipe_path: Path) -> dict[str, dict[str, Any]] | None:
    """The prune/factorize/distill/quantize sections a recipe file names; None when there is no such file."""
    if not recipe_path.is_file():
        return None
    recipe = yaml.safe_load(recipe_path.read_text()) or {}
    return {s: recipe[s] for s in COMPRESSION_SECTIONS if isinstance(recipe.get(s), dict)}


def built_from(artifact: Artifact, settings: dict[str, dict[str, Any]] | None) -> bool:
    """Whether the artifact's manifest has every setting of `settings` (`compression_settings` of a recipe),
    so a changed recipe is rebuilt and benchmarked rather than a stale student. Nested settings (a
    distillation mix) match when the manifest has each one the recipe names: the manifest also lists the
    defaults the recipe leaves out. None (no recipe file): any will do."""
    if settings is None:
        return True
    return all(_has(artifact.recipe.get(section), wanted) for section, wanted in settings.items())


def _has(have: Any, wanted: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(have, dict) and all(_has(have.get(k), v) for k, v in wanted.items())
    return bool(have == wanted)


def _best_by_speed(candidates: list[Artifact]) -> Artifact | None:
    """The fastest by its manifest's own benchmark (batch 1, shortest sequence), newest on a tie."""

    def speed(a: Artifact) -> float:
        try:
            data = json.loads((a.path / "manifest.json").read_text())
            rows = data["benchmark"]["results"]
            small = min(rows, key=lambda r: (r["batch_size"], r["sequence_length"]))
            return float(small["sequences_per_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    if not candidates:
        return None
    return max(enumerate(candidates), key=lambda pair: (speed(pair[1]), pair[0]))[1]


def pick_embedder(artifacts: list[Artifact], precision: str, *, compressed: bool = False) -> Artifact | None:
    """The bi-encoder for a row: same precision (compressed too for that row), else plain int8."""
    embedders = [
        a for a in artifacts if a.name == EMBEDDER_MODEL and _cpu(a) and a.validation_passed is not False
    ]
    plain = [a for a in embedders if not a.compressed]
    if compressed:
        best = _best_by_speed([a for a in embedders if a.compressed and a.precision == "int8"])
        if best is not None:
            return best
    return (
        _newest([a for a in plain if a.precision == precision])
        or _newest([a for a in plain if a.precision == "int8"])
        or _newest(plain)
    )


@dataclass(frozen=True)
class Variant:
    """One server configuration of the benchmark."""

    key: str
    label: str
    baseline: bool = False
    batching: bool | None = None
    env: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()


def link_store(artifacts: list[Artifact], root: Path) -> Path:
    """A store holding exactly `artifacts` (hard links where possible), so that a server loads only them
    and its memory figure is theirs alone."""
    if root.exists():
        shutil.rmtree(root)
    for artifact in artifacts:
        target = root / artifact.name / artifact.version
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(artifact.path, target, copy_function=_link_or_copy)
    return root


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def plan_variants(
    stores: Sequence[Path],
    work: Path,
    *,
    batching_modes: tuple[bool, ...] = (True, False),
    pruned_recipe: Path | None = RECIPES_DIR / PRUNED_RECIPE,
) -> tuple[list[Variant], list[str]]:
    """The servers to run, and one line per variant that had to be skipped (with why).

    Artifacts come from every store in `stores` (the published model_store/ and the benchmark's own fp32
    builds); each variant gets its own store under `work` holding only its sentiment model and embedder.
    """
    artifacts = [a for store in stores for a in read_artifacts(store)]
    sentiment = pick_sentiment(artifacts, pruned_recipe)
    variants = [Variant("baseline", "PyTorch fp32 (FastAPI tutorial)", baseline=True)]
    skipped: list[str] = []
    where = ", ".join(str(s) for s in stores)
    for precision, title in (
        ("fp32", "ONNX fp32"),
        ("int8", "ONNX int8"),
        ("pruned-int8", "pruned/distilled int8"),
    ):
        chosen = sentiment[precision]
        if chosen is None:
            hint = "python -m bench.prepare_store"
            skipped.append(
                f"{title}: no CPU {precision} sentiment artifact in {where} (build it with {hint})"
            )
            continue
        embedder = pick_embedder(
            artifacts,
            "fp32" if precision == "fp32" else "int8",
            compressed=precision == "pruned-int8",
        )
        served = [chosen] + ([embedder] if embedder else [])
        store = link_store(served, work / precision)
        env = {
            "INFERENCE_MODEL_STORE": str(store),
            "INFERENCE_PINNED_VERSIONS": ",".join(a.ref for a in served),
            "INFERENCE_SENTIMENT_MODEL": chosen.name,
        }
        if embedder is not None:
            env["INFERENCE_RANKING_MODEL"] = embedder.name
            env["INFERENCE_RECOMMEND_MODEL"] = embedder.name
        refs = tuple(f"{a.ref} ({a.precision}{', pruned/distilled' if a.compressed else ''})" for a in served)
        for on in batching_modes:
            key = f"{precision}-{'batch' if on else 'nobatch'}"
            label = f"{title}, batching {'on' if on else 'off'}"
            variants.append(
                Variant(
                    key,
                    label,
                    batching=on,
                    env={**env, "INFERENCE_BATCHING": "true" if on else "false"},
                    artifacts=refs,
                )
            )
    return variants, skipped
