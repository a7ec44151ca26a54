import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conversion.checkpoint import load_checkpoint
from conversion.checkpoint_dir import read_marker
from conversion.contrastive import (
    ContrastiveConfig,
    Example,
    distinct_text_batches,
    finetune_bi_encoder,
    training_examples,
)
from conversion.data.homedepot import load_homedepot
from conversion.runners import run_texts, torch_batch_fn
from conversion.training import training_precision

SMALL = ContrastiveConfig(
    max_queries=64, matching_examples=16, batch_size=16, epochs=8, lr=3e-3, max_length=16
)


def _judged() -> dict[tuple[str, str], float]:
    """Each (query text, title)'s best judgement: some titles were judged twice, differently."""
    best: dict[tuple[str, str], float] = {}
    for q in load_homedepot("train"):
        for title, relevance in zip(q.titles, q.relevance, strict=True):
            best[q.text, title] = max(relevance, best.get((q.text, title), 1.0))
    return best


def test_examples_pair_training_queries_with_relevant_titles() -> None:
    cfg = SMALL.model_copy(update={"positives_per_query": 2})
    examples = training_examples(cfg)
    assert len(examples) == 2 * 64 + 16
    assert examples == training_examples(cfg)  # seeded
    assert {len(e) for e in examples} == {2}
    judged = _judged()
    validation = {q.text for q in load_homedepot("validation")}
    search = [e for e in examples if (e[0], e[1]) in judged]
    assert len(search) == 2 * 64
    assert len({e[0] for e in search}) == 64
    for anchor, positive in search:
        assert anchor not in validation
        assert judged[anchor, positive] >= cfg.min_positive_relevance


def test_hard_negatives_are_judged_irrelevant_or_another_querys_title() -> None:
    cfg = SMALL.model_copy(update={"hard_negatives": True})
    examples = training_examples(cfg)
    assert {len(e) for e in examples} == {3}
    judged = _judged()
    search = [e for e in examples if (e[0], e[1]) in judged]
    assert len(search) == 64
    for anchor, positive, negative in search:
        assert judged[anchor, positive] >= cfg.min_positive_relevance
        assert judged.get((anchor, negative), 1.0) <= cfg.max_negative_relevance
        assert positive != negative


def test_batches_hold_every_example_once_and_no_text_twice() -> None:
    # 40 queries 5 times each, 65 titles about 3 times each
    examples: list[Example] = [(f"q{i % 40}", f"title {'x' * (i % 13)} {i % 5}") for i in range(200)]
    batches = distinct_text_batches(examples, 16, random.Random(0))
    assert sorted(e for b in batches for e in b) == sorted(examples)
    assert max(len(b) for b in batches) == 16
    for batch in batches:
        texts = [t for e in batch for t in e]
        assert len(texts) == len(set(texts))


def _margin(checkpoint: Path, anchors: list[str], positives: list[str], negatives: list[str]) -> float:
    loaded = load_checkpoint(checkpoint, "bi-encoder")
    run = torch_batch_fn(loaded.module)
    kwargs = {"max_length": 16, "input_names": loaded.module.input_names, "batch_size": 32}
    a, p, n = (run_texts(run, loaded.tokenizer, texts, **kwargs) for texts in (anchors, positives, negatives))
    return float(np.mean((a * p).sum(1) - (a * n).sum(1)))


@pytest.mark.parametrize("hard_negatives", [False, True])
def test_fine_tuning_pulls_positives_closer_than_negatives(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, hard_negatives: bool
) -> None:
    cfg = SMALL.model_copy(update={"hard_negatives": hard_negatives})
    base = tiny_checkpoints["bi-encoder"]
    out = finetune_bi_encoder(base, tmp_path / "search", cfg)

    examples = training_examples(cfg)
    anchors, positives = [e[0] for e in examples], [e[1] for e in examples]
    # Without hard negatives, another example's positive: what the in-batch softmax pushes away.
    negatives = [e[2] for e in examples] if hard_negatives else positives[1:] + positives[:1]
    margin = _margin(out, anchors, positives, negatives)
    assert margin > _margin(base, anchors, positives, negatives) + 0.05
    weights, start = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.1.intermediate.dense.weight"):
        assert not torch.equal(weights[name], start[name])
    marker = read_marker(out)
    assert marker is not None
    assert (marker["trained_by"], marker["settings"]) == ("contrastive", cfg.model_dump(mode="json"))
    assert marker["precision"] == training_precision()
    assert set(marker["data"]) == {"homedepot_train.tsv", "product_matching_train.tsv"}
