import random
from pathlib import Path

import numpy as np
import pytest

from app.user_vector import recency_weights
from conversion.checkpoint import load_checkpoint
from conversion.checkpoint_dir import read_marker
from conversion.data.interactions import Interactions, load_interactions
from conversion.next_item import (
    Batch,
    Example,
    NextItemConfig,
    catalog_examples,
    finetune_recommender,
    training_batches,
)
from conversion.runners import run_texts, torch_batch_fn
from conversion.training import PRECISION_ENV

TOY = Interactions(
    "amazon-office",
    {str(i): name for i, name in enumerate(["pen", "ink", "paper", "stapler", "staples", "desk"])},
    {"a": ["0", "1", "2", "3", "4"], "b": ["2", "2", "5", "0"]},
)
SMALL = NextItemConfig(
    max_examples=48, batch_size=8, random_negatives=8, epochs=12, lr=3e-3, max_length=16, history=2
)


def test_examples_are_prefixes_of_the_training_part_only() -> None:
    examples = catalog_examples(TOY, NextItemConfig(history=2), random.Random(0))
    # a: training part pen ink paper (stapler: validation target, staples: test target); b: paper paper.
    assert sorted(examples, key=lambda e: (e.target, e.history)) == [
        Example(("pen",), "ink"),
        Example(("pen", "ink"), "paper"),
    ]  # b's re-bought paper has no other history item: no example


def test_batches_hold_one_catalog_and_its_own_random_negatives() -> None:
    cfg = NextItemConfig(max_examples=40, batch_size=16, random_negatives=5)
    batches = training_batches(cfg, random.Random(0))
    assert sum(len(b.examples) for b in batches) == 80
    catalogs = {name: set(load_interactions(name).item_text.values()) for name in cfg.catalogs}
    for batch in batches:
        owners = [n for n, texts in catalogs.items() if {e.target for e in batch.examples} <= texts]
        assert len(owners) == 1
        assert len(batch.negatives) == 5
        assert set(batch.negatives) <= catalogs[owners[0]]


def _next_item_hits(checkpoint: Path, batches: list[Batch]) -> float:
    """How often the user vector scores the true next item above every other target of the batch."""
    loaded = load_checkpoint(checkpoint, "bi-encoder")
    run = torch_batch_fn(loaded.module)
    kwargs = {"max_length": 16, "input_names": loaded.module.input_names, "batch_size": 32}
    hits = []
    for batch in batches:
        targets = run_texts(run, loaded.tokenizer, [e.target for e in batch.examples], **kwargs)
        for i, e in enumerate(batch.examples):
            items = run_texts(run, loaded.tokenizer, list(e.history), **kwargs)
            user = recency_weights(len(e.history), SMALL.recency_half_life) @ items
            scores = targets @ user
            hits.append(float(scores[i] >= np.max(scores)))
    return float(np.mean(hits))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fine_tuning_ranks_the_next_item_first_more_often(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRECISION_ENV, precision)
    base = tiny_checkpoints["bi-encoder"]
    out = finetune_recommender(base, tmp_path / "recommender", SMALL)
    batches = training_batches(SMALL, random.Random(SMALL.seed))
    assert _next_item_hits(out, batches) > _next_item_hits(base, batches) + 0.15
    marker = read_marker(out)
    assert marker is not None
    assert (marker["trained_by"], marker["settings"]) == ("next-item", SMALL.model_dump(mode="json"))
    assert marker["precision"] == precision
    assert set(marker["data"]) == {
        "amazon_office_items.tsv",
        "amazon_office_sequences.tsv",
        "ml-100k.item",
        "ml-100k.inter",
    }
