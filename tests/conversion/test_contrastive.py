from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from conversion.checkpoint import load_checkpoint
from conversion.checkpoint_dir import read_marker
from conversion.contrastive import ContrastiveConfig, Triple, finetune_bi_encoder, training_triples
from conversion.data.homedepot import load_homedepot
from conversion.runners import run_texts, torch_batch_fn

SMALL = ContrastiveConfig(
    max_queries=64, matching_triples=16, batch_size=16, epochs=8, lr=3e-3, max_length=16
)


def test_triples_come_from_the_training_splits_with_graded_positives_and_negatives() -> None:
    triples = training_triples(SMALL)
    assert len(triples) == 80
    assert triples == training_triples(SMALL)  # seeded
    judged = {
        (q.text, t): r for q in load_homedepot("train") for t, r in zip(q.titles, q.relevance, strict=True)
    }
    validation = {q.text for q in load_homedepot("validation")}
    search = [t for t in triples if (t[0], t[1]) in judged]
    assert len(search) == 64
    for anchor, positive, negative in search:
        assert anchor not in validation
        assert judged[anchor, positive] >= SMALL.min_positive_relevance
        assert judged.get((anchor, negative), 1.0) <= SMALL.max_negative_relevance
        assert positive != negative


def _margin(checkpoint: Path, triples: list[Triple]) -> float:
    loaded = load_checkpoint(checkpoint, "bi-encoder")
    run = torch_batch_fn(loaded.module)
    kwargs = {"max_length": 16, "input_names": loaded.module.input_names, "batch_size": 32}
    anchor, positive, negative = (
        run_texts(run, loaded.tokenizer, [t[column] for t in triples], **kwargs) for column in range(3)
    )
    return float(np.mean((anchor * positive).sum(1) - (anchor * negative).sum(1)))


def test_fine_tuning_pulls_positives_closer_than_hard_negatives(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    base = tiny_checkpoints["bi-encoder"]
    out = finetune_bi_encoder(base, tmp_path / "search", SMALL)

    triples = training_triples(SMALL)
    assert _margin(out, triples) > _margin(base, triples) + 0.05
    weights, start = load_file(out / "model.safetensors"), load_file(base / "model.safetensors")
    assert torch.equal(
        weights["embeddings.word_embeddings.weight"], start["embeddings.word_embeddings.weight"]
    )
    name = "encoder.layer.1.intermediate.dense.weight"
    assert not torch.equal(weights[name], start[name])
    marker = read_marker(out)
    assert marker is not None
    assert (marker["trained_by"], marker["settings"]) == ("contrastive", SMALL.model_dump(mode="json"))
    assert set(marker["data"]) == {"homedepot_train.tsv", "product_matching_train.tsv"}
