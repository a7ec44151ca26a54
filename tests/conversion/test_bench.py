from pathlib import Path
from typing import Any

from conversion.bench import format_benchmark, run_benchmark
from conversion.recipe import BenchmarkConfig


def test_benchmark_grid_with_source_comparison(
    loaded_sentiment: Any, sentiment_graphs: dict[str, Path]
) -> None:
    config = BenchmarkConfig(batch_sizes=[1, 2], sequence_lengths=[8, 16], warmup=0, repeats=2)
    result = run_benchmark(
        sentiment_graphs["optimized"],
        config,
        provider="CPUExecutionProvider",
        input_names=loaded_sentiment.module.input_names,
        vocab_size=100,
        source_module=loaded_sentiment.module,
    )
    assert result["provider"] == "CPUExecutionProvider"
    assert result["threads"] == 1
    points = [(r["batch_size"], r["sequence_length"]) for r in result["results"]]
    assert points == [(1, 8), (1, 16), (2, 8), (2, 16)]
    for r in result["results"]:
        assert r["latency_ms_p50"] > 0
        assert r["source_latency_ms_p50"] > 0
        assert r["sequences_per_s"] > 0
        assert r["speedup_vs_source"] > 0
    assert "speedup" in format_benchmark(result)


def test_unavailable_provider_is_recorded_as_the_one_used(sentiment_graphs: dict[str, Path]) -> None:
    config = BenchmarkConfig(batch_sizes=[1], sequence_lengths=[8], warmup=0, repeats=1, compare_source=False)
    result = run_benchmark(
        sentiment_graphs["optimized"],
        config,
        provider="CUDAExecutionProvider",
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        vocab_size=100,
    )
    assert result["intended_provider"] == "CUDAExecutionProvider"
    assert result["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert "source_latency_ms_p50" not in result["results"][0]
