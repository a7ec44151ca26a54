from pathlib import Path

import numpy as np

from conversion.checkpoint import load_checkpoint
from conversion.checkpoint_dir import read_marker
from conversion.cross_encoder import CrossEncoderConfig, ScoredPair, finetune_cross_encoder, training_pairs
from conversion.data.homedepot import load_homedepot
from conversion.runners import run_texts, torch_batch_fn

SMALL = CrossEncoderConfig(
    max_queries=60, other_titles=2, epochs=8, lr=3e-3, max_length=32, freeze_lower_layers=0
)


def test_pairs_are_training_judgements_plus_unjudged_titles_as_irrelevant() -> None:
    pairs = training_pairs(CrossEncoderConfig(max_queries=50, other_titles=3))
    judged = {
        (q.text, t): r for q in load_homedepot("train") for t, r in zip(q.titles, q.relevance, strict=True)
    }
    validation = {q.text for q in load_homedepot("validation")}
    queries = {p.query for p in pairs}
    assert len(queries) == 50
    assert not queries & validation
    unjudged = [p for p in pairs if (p.query, p.title) not in judged]
    assert len(unjudged) == 3 * 50
    assert all(p.target == 0.0 for p in unjudged)
    for p in pairs:
        if (p.query, p.title) in judged:
            assert p.target == (judged[(p.query, p.title)] - 1.0) / 2.0
    assert len(pairs) == len(unjudged) + sum(1 for p in pairs if (p.query, p.title) in judged)


def _pairwise_accuracy(checkpoint: Path, pairs: list[ScoredPair]) -> float:
    """How often a query's judged-relevant title (target >= 0.75) outscores its unjudged ones."""
    loaded = load_checkpoint(checkpoint, "cross-encoder")
    kwargs = {"max_length": 32, "input_names": loaded.module.input_names, "batch_size": 64}
    scores = run_texts(
        torch_batch_fn(loaded.module), loaded.tokenizer, [(p.query, p.title) for p in pairs], **kwargs
    )
    won = []
    for query in {p.query for p in pairs}:
        mine = [(p.target, float(s[0])) for p, s in zip(pairs, scores, strict=True) if p.query == query]
        good = [s for t, s in mine if t >= 0.75]
        bad = [s for t, s in mine if t == 0.0]
        won += [float(g > b) for g in good for b in bad]
    return float(np.mean(won))


def test_fine_tuning_learns_to_score_judged_relevant_titles_above_unrelated_ones(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    base = tiny_checkpoints["cross-encoder"]
    out = finetune_cross_encoder(base, tmp_path / "reranker", SMALL)
    pairs = training_pairs(SMALL)
    before, after = _pairwise_accuracy(base, pairs), _pairwise_accuracy(out, pairs)
    assert after > before + 0.15, (before, after)
    marker = read_marker(out)
    assert marker is not None
    assert (marker["trained_by"], marker["settings"]) == ("cross-encoder", SMALL.model_dump(mode="json"))
    assert set(marker["data"]) == {"homedepot_train.tsv"}


def test_dropped_layers_make_a_shallower_checkpoint(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    cfg = CrossEncoderConfig(max_queries=4, drop_layers=[1], freeze_lower_layers=0)
    out = finetune_cross_encoder(tiny_checkpoints["cross-encoder"], tmp_path / "shallow", cfg)
    assert load_checkpoint(out, "cross-encoder").config["num_hidden_layers"] == 1
