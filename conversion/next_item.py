"""Fine-tune a bi-encoder as a two-tower next-item recommender.

The item tower is the bi-encoder (mean-pooled, normalised title embeddings); the user tower is what
/v1/recommend computes (app/user_vector.py): the recency-weighted mean of the embeddings of the user's last
`history` items. Each training example is a prefix of a user's sequence and the item that came next; the
loss is a softmax over the batch's next items (in-batch negatives), the user's own history items and
repeats of the positive masked out.

Only the training part of each sequence is read: the last two items of every user are the test and
validation targets of the gate (conversion/data/interactions.py) and are never trained on.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from app.user_vector import recency_weights
from conversion.data.interactions import CATALOGS, Catalog, Interactions, load_interactions

HELD_OUT = 2  # validation and test targets per user


class NextItemConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    catalogs: list[Catalog] = Field(default_factory=lambda: list(CATALOGS), min_length=1)
    max_examples: int = Field(
        default=4_000, ge=1, description="per catalog: a seeded sample of its (prefix, next item) examples"
    )
    history: int = Field(default=3, ge=1, description="history items the user tower reads in training")
    random_negatives: int = Field(
        default=32,
        ge=0,
        description="catalog items drawn uniformly per batch, negatives of every example beside the "
        "in-batch ones: in-batch negatives are drawn by popularity and alone teach the model to rank popular "
        "items down, while a shop's candidates (and the sampled protocol's) are mostly unpopular items",
    )
    recency_half_life: float | None = Field(default=3.0, gt=0)
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=1e-4, gt=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    max_length: int = Field(default=32, ge=8)
    scale: float = Field(default=20.0, gt=0, description="1 / temperature of the softmax over cosines")
    freeze_word_embeddings: bool = True
    freeze_lower_layers: int = Field(
        default=0, ge=0, description="the embeddings and this many lowest layers"
    )
    seed: int = 0
    threads: int = Field(default=2, ge=1)


@dataclass(frozen=True)
class Example:
    history: tuple[str, ...]  # item texts, oldest first
    target: str


@dataclass(frozen=True)
class Batch:
    examples: list[Example]
    negatives: list[str]  # item texts of the examples' catalog


def catalog_examples(data: Interactions, cfg: NextItemConfig, rng: random.Random) -> list[Example]:
    """Every (last `history` items, next item) of the users' training parts; a seeded sample of them."""
    examples = []
    for items in data.sequences.values():
        texts = [data.item_text[i] for i in items[:-HELD_OUT]]
        for t in range(1, len(texts)):
            history = tuple(h for h in texts[max(0, t - cfg.history) : t] if h != texts[t])
            if history:
                examples.append(Example(history, texts[t]))
    rng.shuffle(examples)
    return examples[: cfg.max_examples]


def training_batches(cfg: NextItemConfig, rng: random.Random) -> list[Batch]:
    """Batches of one catalog each (its random negatives must be items of the same catalog), shuffled."""
    batches = []
    for name in cfg.catalogs:
        data = load_interactions(name)
        examples = catalog_examples(data, cfg, rng)
        texts = sorted(set(data.item_text.values()))
        for start in range(0, len(examples), cfg.batch_size):
            negatives = rng.sample(texts, min(cfg.random_negatives, len(texts)))
            batches.append(Batch(examples[start : start + cfg.batch_size], negatives))
    rng.shuffle(batches)
    return batches


def next_item_loss(model: Any, batch: Batch, cfg: NextItemConfig) -> Any:
    """Cross-entropy of each user vector over the batch's next items and its random negatives (each text
    encoded once); a candidate that is the example's own target elsewhere or in its history is masked."""
    import torch

    from conversion.training import mixed_precision

    examples = batch.examples
    texts = list(dict.fromkeys([t for e in examples for t in (*e.history, e.target)] + batch.negatives))
    row = {t: n for n, t in enumerate(texts)}
    with mixed_precision():  # the encoder; the scoring and the loss below stay fp32
        encoded = model(model.preprocess(texts))["sentence_embedding"]
    embeddings = torch.nn.functional.normalize(encoded.float(), dim=-1)
    users = []
    for e in examples:
        weights = torch.tensor(recency_weights(len(e.history), cfg.recency_half_life), dtype=torch.float32)
        users.append(torch.nn.functional.normalize(weights @ embeddings[[row[h] for h in e.history]], dim=-1))
    candidates = [e.target for e in examples] + batch.negatives
    logits = cfg.scale * torch.stack(users) @ embeddings[[row[c] for c in candidates]].T
    mask = torch.tensor(
        [
            [j != i and (c == e.target or c in e.history) for j, c in enumerate(candidates)]
            for i, e in enumerate(examples)
        ]
    )
    logits = logits.masked_fill(mask, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(examples)))


def finetune_recommender(base_dir: Path, out_dir: Path, cfg: NextItemConfig) -> Path:
    """Fine-tunes the sentence-transformers model in `base_dir`; writes an HF checkpoint to `out_dir`."""
    from conversion.checkpoint_dir import describe_input, save_trained_checkpoint
    from conversion.data import data_root
    from conversion.data.movielens import movielens_dir
    from conversion.training import adamw_with_warmup, optimizer_step, sentence_encoder, training_precision

    model, encoder = sentence_encoder(base_dir, out_dir, cfg)
    rng = random.Random(cfg.seed)
    batches = training_batches(cfg, rng)
    steps = len(batches) * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = adamw_with_warmup(params, cfg.lr, cfg.warmup_fraction, steps)
    print(
        f"fine-tuning {base_dir.name} as a two-tower recommender on "
        f"{sum(len(b.examples) for b in batches)} next-item examples from "
        f"{', '.join(cfg.catalogs)} ({cfg.epochs} epoch(s), batch {cfg.batch_size}, lr {cfg.lr}, history "
        f"{cfg.history}, recency half-life {cfg.recency_half_life})"
    )
    started = time.perf_counter()
    model.train()
    with tqdm(total=steps, desc="recommender fine-tune", unit="step") as bar:
        for _ in range(cfg.epochs):
            rng.shuffle(batches)
            for batch in batches:
                optimizer_step(next_item_loss(model, batch, cfg), params, optimizer, scheduler, bar)
    print(f"training took {time.perf_counter() - started:.0f} s")
    model.eval()
    sources = {
        "amazon-office": [
            data_root() / "recommendation" / f"amazon_office_{n}.tsv" for n in ("items", "sequences")
        ],
        "movielens-100k": [movielens_dir() / f"ml-100k.{n}" for n in ("item", "inter")],
    }
    trained = {
        "trained_by": "next-item",
        "settings": cfg.model_dump(mode="json"),
        "precision": training_precision(),
        "base": describe_input(base_dir),
        "data": {path.name: describe_input(path) for name in cfg.catalogs for path in sources[name]},
    }
    return save_trained_checkpoint(out_dir, encoder, model.tokenizer, trained)
