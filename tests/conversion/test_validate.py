from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conversion.errors import RecipeError
from conversion.recipe import parse_recipe
from conversion.tiny import tiny_recipe_data
from conversion.validate import (
    format_table,
    hit_and_ndcg,
    metric,
    ndcg_agreement,
    spearman,
    validate_artifact,
)


def test_ndcg_agreement_is_one_for_the_same_ranking_and_lower_for_swaps() -> None:
    scores = np.linspace(1.0, 0.0, 30)
    assert ndcg_agreement(scores, scores) == pytest.approx(1.0)
    swapped = scores.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert 0.9 < ndcg_agreement(scores, swapped) < 1.0
    assert ndcg_agreement(scores, -scores) == 0.0  # the source's top 10 all fall out


def test_hit_and_ndcg_of_one_relevant_item() -> None:
    assert hit_and_ndcg(np.array([0.9, 0.1, 0.2])) == (1.0, 1.0)
    hit, ndcg = hit_and_ndcg(np.array([0.5, 0.9, 0.1]))
    assert hit == 1.0
    assert ndcg == pytest.approx(1 / np.log2(3))
    assert hit_and_ndcg(np.array([0.0, *np.ones(10)])) == (0.0, 0.0)


def test_spearman_is_one_for_a_monotone_transform() -> None:
    assert spearman(np.arange(5.0), np.arange(5.0) ** 2) == pytest.approx(1.0)


def test_budgets() -> None:
    assert metric("d", "accuracy", 80.0, 79.2, 1.0, "max_drop").passed
    assert not metric("d", "accuracy", 80.0, 78.9, 1.0, "max_drop").passed
    assert metric("d", "ndcg", 1.0, 0.98, 0.98, "min").passed
    assert not metric("d", "ndcg", 1.0, 0.979, 0.98, "min").passed
    assert metric("d", "info", 1.0, 0.0, None, "none").passed


def test_sentiment_gate_on_real_data(loaded_sentiment: Any, sentiment_graphs: dict[str, Path]) -> None:
    data = tiny_recipe_data("sequence-classification", Path("unused"))
    recipe = parse_recipe(data)
    report = validate_artifact(loaded_sentiment, sentiment_graphs["optimized"], recipe)
    accuracies = [m for m in report.metrics if m.metric == "accuracy"]
    assert [m.dataset for m in accuracies] == [
        "sst2_validation",
        "uci_amazon",
        "uci_yelp",
        "amazon_multidomain_validation",
    ]
    assert {m.metric for m in report.metrics} == {
        "accuracy",
        "macro_f1",
        "balanced_accuracy",
        "label_agreement",
    }
    balance = report.extra["class_balance"]
    assert sum(balance["uci_amazon"].values()) == 48  # max_examples
    assert set(balance["uci_amazon"]) == {"negative", "positive"}
    for m in accuracies:  # the fp32 graph predicts what PyTorch predicts
        assert m.source == pytest.approx(m.artifact)
        assert 0 <= m.source <= 100
    assert report.passed
    assert "sst2_validation" in format_table(report)


def test_a_model_that_predicts_only_the_majority_class_fails_the_gate(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """Source and artifact agree exactly (no accuracy drop); the floor on balanced accuracy refuses it."""
    import torch

    from conversion.checkpoint import load_checkpoint
    from conversion.export import export_onnx

    loaded = load_checkpoint(tiny_checkpoints["sequence-classification"], "sequence-classification")
    classifier = loaded.module.model.classifier
    with torch.no_grad():
        classifier.weight.zero_()
        classifier.bias.copy_(torch.tensor([-5.0, 5.0]))  # always "positive"
    graph = export_onnx(loaded.module, tmp_path / "m.onnx", vocab_size=loaded.config["vocab_size"])
    data = tiny_recipe_data("sequence-classification", Path("unused"))
    data["validation"]["sentiment"]["min_balanced_accuracy"] = 70.0  # type: ignore[index]
    report = validate_artifact(loaded, graph, parse_recipe(data))
    assert not report.passed
    failed = {(m.dataset, m.metric) for m in report.metrics if not m.passed}
    assert failed == {(m.dataset, "balanced_accuracy") for m in report.metrics}
    assert len(failed) == 4
    for m in report.metrics:
        if m.metric == "accuracy":
            assert m.delta == 0  # the drop budget alone would let it through
            assert m.passed
        if m.metric == "balanced_accuracy":
            assert m.artifact == pytest.approx(50.0)
    table = format_table(report)
    assert "balanced_accuracy" in table
    assert "NO" in table


def test_bi_encoder_gate_fails_past_its_budget(loaded_embedder: Any, tmp_path: Path) -> None:
    from conversion.export import export_onnx
    from conversion.quantize import apply_precision
    from conversion.recipe import QuantizeConfig

    fp32 = export_onnx(
        loaded_embedder.module, tmp_path / "e.onnx", vocab_size=loaded_embedder.config["vocab_size"]
    )
    int8 = apply_precision(QuantizeConfig(method="dynamic", per_channel=False), fp32, tmp_path / "q.onnx")
    data = tiny_recipe_data("bi-encoder", Path("unused"))
    data["validation"]["ranking"]["min_cosine_budget"] = 1.0  # type: ignore[index]
    data["validation"]["recommendation"] = {  # type: ignore[index]
        "enabled": True,
        "users": 5,
        "negatives": 20,
        "baselines": ["random", "popularity", "co-occurrence"],
    }
    report = validate_artifact(loaded_embedder, int8, parse_recipe(data))
    failed = [m for m in report.metrics if not m.passed]
    assert [(m.dataset, m.metric) for m in failed] == [("wands+pool", "cosine_mean")]
    assert not report.passed
    assert {m.dataset for m in report.metrics} == {
        "wands+pool",
        "wands",
        "homedepot-rerank",
        "homedepot-catalog",
        "amazon-office/sampled",
        "amazon-office/full",
        "movielens-100k/sampled",
        "movielens-100k/full",
    }
    assert set(report.extra["recommendation_baselines"]) == {"random", "popularity", "co-occurrence"}
    assert "baseline co-occurrence: amazon-office/sampled hr@10" in format_table(report)
    fp32_report = validate_artifact(loaded_embedder, fp32, parse_recipe(data))
    cosine = next(m for m in fp32_report.metrics if m.metric == "cosine_mean")
    assert cosine.artifact == pytest.approx(1.0, abs=1e-6)


def test_a_recommender_must_beat_the_baselines_it_names(loaded_embedder: Any, tmp_path: Path) -> None:
    """A random tiny encoder ranks next items about as well as chance: popularity beats it, so a gate that
    asks for popularity fails; the untuned content baseline is the packaged MiniLM (real, fp32)."""
    from conversion.export import export_onnx

    fp32 = export_onnx(
        loaded_embedder.module, tmp_path / "e.onnx", vocab_size=loaded_embedder.config["vocab_size"]
    )
    data = tiny_recipe_data("bi-encoder", Path("unused"))
    data["validation"]["relevance"] = {"enabled": False}  # type: ignore[index]
    data["user_tower"] = {"recency_half_life": 2.0}
    data["validation"]["recommendation"] = {  # type: ignore[index]
        "users": 800,
        "catalogs": ["amazon-office"],
        "protocols": ["sampled"],
        "must_beat": {"popularity": ["amazon-office/sampled"], "untuned-content": ["amazon-office/sampled"]},
    }
    report = validate_artifact(loaded_embedder, fp32, parse_recipe(data))
    beat = {m.metric: m for m in report.metrics if m.metric.startswith("hr@10_vs_")}
    assert set(beat) == {"hr@10_vs_popularity", "hr@10_vs_untuned-content"}
    assert not beat["hr@10_vs_popularity"].passed
    assert (
        beat["hr@10_vs_popularity"].source
        == report.extra["recommendation_baselines"]["popularity"]["amazon-office/sampled"][0]
    )
    assert report.extra["recommendation_baselines"]["untuned-content"]["amazon-office/sampled"][0] > 0.25
    assert not report.passed


def test_must_beat_names_only_reported_cells() -> None:
    data = tiny_recipe_data("bi-encoder", Path("unused"))
    data["validation"]["recommendation"] = {
        "protocols": ["sampled"],
        "must_beat": {"popularity": ["amazon-office/full"]},
    }  # type: ignore[index]
    with pytest.raises(RecipeError, match="not among the reported cells"):
        parse_recipe(data)


def test_search_quality_is_measured_against_judgements_and_baselines(
    loaded_embedder: Any, tmp_path: Path
) -> None:
    from conversion.export import export_onnx

    fp32 = export_onnx(
        loaded_embedder.module, tmp_path / "e.onnx", vocab_size=loaded_embedder.config["vocab_size"]
    )
    data = tiny_recipe_data("bi-encoder", Path("unused"))
    data["validation"]["relevance"]["must_beat_baselines"] = True  # type: ignore[index]
    report = validate_artifact(loaded_embedder, fp32, parse_recipe(data))
    by_name = {(m.dataset, m.metric): m for m in report.metrics}
    for setting in ("rerank", "catalog"):
        own = by_name[f"homedepot-{setting}", "ndcg@10"]
        assert own.artifact == pytest.approx(own.source, abs=1e-6)  # fp32 export: the source's ranking
        assert own.passed
        versus = by_name[f"homedepot-{setting}", "ndcg@10_vs_bm25"]
        assert versus.source == report.extra["baselines"]["bm25"][setting]
    # A random tiny encoder finds other queries' titles no worse than their own; BM25 matches the words.
    assert not by_name["homedepot-catalog", "ndcg@10_vs_bm25"].passed
    assert not report.passed
    assert "baseline bm25: homedepot-rerank ndcg@10" in format_table(report)


def test_a_reranker_is_measured_reranking_and_two_stage_beside_the_baselines(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """The catalog setting re-scores the untuned MiniLM's shortlist: a random tiny cross-encoder reorders
    only those, so it cannot beat the first stage alone by much, and loses to BM25 when re-ranking."""
    from conversion.checkpoint import load_checkpoint
    from conversion.export import export_onnx

    loaded = load_checkpoint(tiny_checkpoints["cross-encoder"], "cross-encoder")
    fp32 = export_onnx(loaded.module, tmp_path / "c.onnx", vocab_size=loaded.config["vocab_size"])
    data = tiny_recipe_data("cross-encoder", Path("unused"))
    data["validation"]["relevance"] = {  # type: ignore[index]
        "queries": 40,
        "shortlist": 5,
        "baselines": ["bm25", "untuned-minilm"],
        "must_beat_baselines": True,
    }
    report = validate_artifact(loaded, fp32, parse_recipe(data))
    by_name = {(m.dataset, m.metric): m for m in report.metrics}
    for setting in ("rerank", "catalog"):
        own = by_name[f"homedepot-{setting}", "ndcg@10"]
        assert own.artifact == pytest.approx(own.source, abs=1e-6)
    assert set(report.extra["baselines"]) == {"bm25", "untuned-minilm"}
    assert not by_name["homedepot-rerank", "ndcg@10_vs_bm25"].passed
    alone = by_name["homedepot-catalog", "ndcg@10_vs_first_stage"]
    # the first stage alone is the untuned MiniLM over the whole validation catalog
    assert alone.source == pytest.approx(report.extra["baselines"]["untuned-minilm"]["catalog"])
    # a shortlist of 5 reordered at random keeps the rest of the top 10 where the first stage put it
    assert abs(alone.artifact - alone.source) < 0.5 * alone.source
    assert not report.passed
