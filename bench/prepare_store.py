"""The benchmark's own builds: the variants the serving benchmark compares that model_store/ does not
publish (fp32 builds of the default recipes, built with the conversion CLI; int8 copies with bench.rewrite's
LayerNorm rewrite), in a store of their own, so that benchmark-only versions never become the newest
version the service serves by default.

    .venv/bin/python -m bench.prepare_store            # -> bench_results/built
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import yaml

from bench.paths import REPO_ROOT, RESULTS_DIR
from bench.rewrite import unfuse_skip_layernorm
from bench.variants import (
    EMBEDDER_MODEL,
    REWRITE_KEY,
    SENTIMENT_MODEL,
    Artifact,
    pick_embedder,
    pick_sentiment,
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


def build(recipe: dict[str, object], store: Path, work: Path) -> tuple[bool, str]:
    path = work / f"{recipe['name']}-fp32.yaml"
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
    return lines


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def rewrite_copy(artifact: Artifact, dst: Path) -> tuple[Path, int]:
    """A new version in `dst` of `artifact` with the LayerNorm rewrite; manifest hashes updated."""
    manifest = json.loads((artifact.path / "manifest.json").read_text())
    folder = dst / artifact.name
    versions = [int(p.name) for p in folder.glob("*") if p.name.isdigit()] if folder.is_dir() else []
    version = str(max(versions, default=0) + 1)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
    for name in manifest.get("files", {}):  # exactly the files the manifest vouches for
        shutil.copy2(artifact.path / name, staging / name)
    onnx_file = manifest.get("onnx_file", "model.onnx")
    model = onnx.load(str(staging / onnx_file))
    replaced = unfuse_skip_layernorm(model)
    onnx.save(model, str(staging / onnx_file))
    manifest["version"] = version
    manifest["recipe"] = {
        **manifest.get("recipe", {}),
        REWRITE_KEY: {"rewrite": "unfuse-skip-layernorm", "from": str(artifact.path), "replaced": replaced},
    }
    manifest["files"] = {**manifest.get("files", {}), onnx_file: _sha256(staging / onnx_file)}
    manifest["size_bytes"] = (staging / onnx_file).stat().st_size
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
    staging.rename(folder / version)
    return folder / version, replaced


def rewrite_missing(src: Path, dst: Path) -> list[str]:
    """LayerNorm-rewritten copies of the int8 artifacts the serving benchmark uses (once each)."""
    artifacts = read_artifacts(src)
    done = {
        str(a.recipe[REWRITE_KEY].get("from"))
        for a in read_artifacts(dst)
        if a.rewritten and isinstance(a.recipe.get(REWRITE_KEY), dict)
    }
    picked = pick_sentiment(artifacts)
    wanted = [
        picked["int8"],
        picked["pruned-int8"],
        pick_embedder(artifacts, "int8"),
        pick_embedder(artifacts, "int8", compressed=True),
    ]
    lines = []
    seen: set[Path] = set()
    for artifact in wanted:
        if artifact is None or artifact.precision != "int8" or artifact.path in seen:
            continue
        seen.add(artifact.path)
        if str(artifact.path) in done:
            continue
        path, replaced = rewrite_copy(artifact, dst)
        lines.append(f"{artifact.ref} int8: {replaced} SkipLayerNormalization rewritten -> {path}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, default=REPO_ROOT / "model_store")
    parser.add_argument("--store", type=Path, default=RESULTS_DIR / "built")
    parser.add_argument("--recipes", type=Path, default=REPO_ROOT / "model_store" / "recipes")
    parser.add_argument("--no-build", action="store_true", help="only copy; report what is missing")
    args = parser.parse_args(argv)
    args.store.mkdir(parents=True, exist_ok=True)
    for line in prepare(args.source, args.store, args.recipes, build_missing=not args.no_build):
        print(line, flush=True)
    if not args.no_build:
        for line in rewrite_missing(args.source, args.store):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
