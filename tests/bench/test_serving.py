"""The whole serving benchmark on tiny models: real uvicorn processes (baseline and service) on 127.0.0.1."""

import json
from pathlib import Path

import pytest

from bench.serving import main


@pytest.mark.integration
def test_side_by_side_run_writes_rows_for_every_server_and_endpoint(
    tiny_store: Path, tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "results"
    code = main(
        [
            "--store",
            str(tiny_store),
            "--built",
            str(tmp_path / "no-builds"),
            "--sentiment-checkpoint",
            str(tiny_checkpoints["sequence-classification"]),
            "--embedder-checkpoint",
            str(tiny_checkpoints["bi-encoder"]),
            "--baseline-threads",
            "1",  # two spinning OpenMP threads on a busy CI core can stall a 0.6 s cell
            "--endpoints",
            "sentiment,rank,recommend",
            "--concurrency",
            "2",
            "--batching",
            "on",
            "--duration",
            "0.6",
            "--warmup",
            "0.2",
            "--payloads",
            "10",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    data = json.loads((out / "serving-latest.json").read_text())
    rows = data["rows"]
    assert {(r["variant"], r["endpoint"]) for r in rows} == {
        (v, e) for v in ("baseline", "int8-batch") for e in ("sentiment", "rank", "recommend")
    }
    for row in rows:
        assert row["errors"] == 0
        assert row["texts_per_s"] > 0
        assert row["ratio"] is not None
        assert row["peak_rss_mb"] > 0
    assert any("fp32" in line for line in data["meta"]["skipped"])
    assert (out / "serving-latest.png").read_bytes()[:4] == b"\x89PNG"
    assert "| ONNX int8, batching on | sentiment | 2 |" in (out / "serving-latest.md").read_text()
