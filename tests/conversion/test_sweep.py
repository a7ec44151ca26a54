import json
from pathlib import Path
from typing import Any

import yaml

from conversion.store import list_store
from conversion.sweep import format_sweep, run_sweep
from conversion.tiny import tiny_recipe_data


def _recipe(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_sweep_publishes_only_the_fastest_passing_build(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    source = tiny_checkpoints["bi-encoder"]
    int8 = tiny_recipe_data("bi-encoder", source)
    fp32 = tiny_recipe_data("bi-encoder", source) | {"quantize": {"method": "none"}}
    # Half the heads and FFN removed, no recovery: its ranking is no longer exactly the source's.
    pruned = tiny_recipe_data("bi-encoder", source) | {
        "prune": {"heads_keep_fraction": 0.5, "ffn_keep_fraction": 0.5, "importance_texts": 16}
    }
    pruned["validation"]["ranking"]["ndcg_budget"] = 1.0
    recipes = [
        _recipe(tmp_path / "int8.yaml", int8),
        _recipe(tmp_path / "pruned.yaml", pruned),
        _recipe(tmp_path / "fp32.yaml", fp32),
    ]
    store = tmp_path / "store"
    plot = tmp_path / "sweep.png"

    rows = run_sweep(recipes, store, plot_path=plot)

    assert [r.passed for r in rows] == [True, False, True]
    failed = rows[1]
    assert failed.metric is not None
    assert failed.metric["metric"].startswith("ndcg@10")
    assert failed.metric["artifact"] < 1.0
    assert failed.latency_ms is not None  # measured although the gate refused it
    assert failed.published is None
    assert rows[0].speedup == 1.0
    published = [r for r in rows if r.published is not None]
    assert len(published) == 1
    winner = published[0]
    assert winner.latency_ms == min(r.latency_ms for r in rows if r.passed and r.latency_ms is not None)
    assert list_store(store) == {"product-embedder": ["1"]}
    manifest = json.loads((store / "product-embedder" / "1" / "manifest.json").read_text())
    assert manifest["precision"] == ("int8" if winner is rows[0] else "fp32")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(plot.with_suffix(".json").read_text())
    assert [r["passed"] for r in saved] == [True, False, True]
    assert saved[1]["latencies"]
    table = format_sweep(rows)
    assert "FAILED" in table
    assert "published" in table


def test_sweep_without_publishing_leaves_the_store_untouched(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    recipe = _recipe(
        tmp_path / "int8.yaml",
        tiny_recipe_data("sequence-classification", tiny_checkpoints["sequence-classification"]),
    )
    rows = run_sweep([recipe], tmp_path / "store", publish_best=False)
    assert rows[0].passed
    assert rows[0].published is None
    assert not (tmp_path / "store").exists()
