"""The benchmark's own builds: the variants the serving benchmark compares that model_store/ does not
publish (fp32 builds of the default recipes; the plain int8 sentiment teacher, `review-sentiment.int8.yaml`;
the pruned + distilled int8 student when the default store has no build of its current recipe), built with
the conversion CLI into a store of their own, so that benchmark-only versions never become the newest version
the service serves by default. A build the accuracy gate refuses is reported and not published.

    .venv/bin/python -m bench.prepare_store            # -> bench_results/built
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from bench.paths import REPO_ROOT, RESULTS_DIR
from bench.variants import (
    EMBEDDER_MODEL,
    INT8_RECIPE,
    PRUNED_RECIPE,
    RECIPES_DIR,
    SENTIMENT_MODEL,
    built_from,
    compression_settings,
    pick_embedder,
    pick_sentiment,
    pruned_sentiment,
    read_artifacts,
)


def fp32_recipe(recipe: dict[str, object]) -> dict[str, object]:
    """The same recipe without quantization (and without its int8-only exclusions).

    An fp32 export is the source model itself (the pipeline's parity check against PyTorch still runs), so
    the accuracy gate and the recipe's own benchmark are skipped: the serving benchmark measures it.
    """
    out = dict(recipe)
    out["quantize"] = {"method": "none"}
    out["validation"] = {"enabled": False}
    out["benchmark"] = {"enabled": False}
    return out


def build(recipe: dict[str, object], store: Path, work: Path, suffix: str = "fp32") -> tuple[bool, str]:
    path = work / f"{recipe['name']}-{suffix}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conversion.cli",
            "build",
            "--recipe",
            str(path),
            "--store",
            str(store),
            "--quiet",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
    return result.returncode == 0, " | ".join(tail)


def prepare(src: Path, dst: Path, recipes: Path, *, build_missing: bool = True) -> list[str]:
    """Builds into `dst` what neither `src` nor `dst` has; returns one line per thing done or skipped."""
    lines: list[str] = []
    artifacts = read_artifacts(src) + read_artifacts(dst)
    wanted = []
    if pick_sentiment(artifacts)["fp32"] is None:
        wanted.append(
            (SENTIMENT_MODEL, recipes / f"{SENTIMENT_MODEL}.fp32.yaml", recipes / f"{SENTIMENT_MODEL}.yaml")
        )
    embedder = pick_embedder(artifacts, "fp32")
    if embedder is None or embedder.precision != "fp32":
        wanted.append(
            (EMBEDDER_MODEL, recipes / f"{EMBEDDER_MODEL}.fp32.yaml", recipes / f"{EMBEDDER_MODEL}.yaml")
        )
    with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
        for name, fp32_path, default_path in wanted:
            source = fp32_path if fp32_path.is_file() else default_path
            if not source.is_file():
                lines.append(f"{name} fp32: no recipe at {fp32_path} or {default_path}")
                continue
            if not build_missing:
                lines.append(f"{name} fp32: missing (build it without --no-build)")
                continue
            recipe = yaml.safe_load(source.read_text())
            ok, tail = build(fp32_recipe(recipe), dst, Path(tmp))
            lines.append(f"{name} fp32 from {source.name}: {'built' if ok else 'FAILED'} ({tail})")
        if pick_sentiment(artifacts)["int8"] is None:
            lines.append(build_variant(recipes / INT8_RECIPE, "int8", dst, Path(tmp), build_missing))
        pruned_recipe = recipes / PRUNED_RECIPE
        settings = compression_settings(pruned_recipe)
        if not any(built_from(a, settings) for a in pruned_sentiment(artifacts)):
            lines.append(build_variant(pruned_recipe, "pruned int8", dst, Path(tmp), build_missing))
    return lines


def build_variant(path: Path, label: str, dst: Path, work: Path, build_missing: bool) -> str:
    """A sentiment variant built from its recipe as it is, gated like any build (the student: minutes of
    training)."""
    if not path.is_file():
        return f"{SENTIMENT_MODEL} {label}: no recipe at {path}"
    if not build_missing:
        return f"{SENTIMENT_MODEL} {label}: no build of {path.name} (build it without --no-build)"
    ok, tail = build(yaml.safe_load(path.read_text()), dst, work, suffix=label.replace(" ", "-"))
    return f"{SENTIMENT_MODEL} {label} from {path.name}: {'built' if ok else 'REFUSED or FAILED'} ({tail})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=REPO_ROOT / "model_store")
    parser.add_argument("--store", type=Path, default=RESULTS_DIR / "built")
    parser.add_argument("--recipes", type=Path, default=RECIPES_DIR)
    parser.add_argument("--no-build", action="store_true", help="only copy; report what is missing")
    args = parser.parse_args(argv)
    args.store.mkdir(parents=True, exist_ok=True)
    for line in prepare(args.source, args.store, args.recipes, build_missing=not args.no_build):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
