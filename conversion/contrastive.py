"""Fine-tune a bi-encoder for product search: contrastive, with in-batch negatives (and hard negatives if
asked).

Examples come from the training splits only:
- Home Depot training queries: the query and a title judged relevant for it (relevance >= 2, sampled with
  weight `relevance - 1`, the gain NDCG counts), `positives_per_query` times; with `hard_negatives`, also a
  title judged (nearly) irrelevant for the same query (a random title of another query when there is none).
- Product matching pairs, if asked: a title and a title of the same product (and, with `hard_negatives`, a
  title judged another product for it).

The loss is sentence-transformers' MultipleNegativesRankingLoss on mean-pooled, normalised embeddings (what
the service computes): a softmax over every positive (and hard negative) of the batch, in both directions by
default (query to title and title to query). Batches hold titles of similar length (less padding) and never a
text twice (a repeated text would be its own negative).
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from conversion.data import data_root, read_tsv
from conversion.data.homedepot import load_homedepot

Example = tuple[str, ...]  # (anchor, positive) or (anchor, positive, hard negative)


class ContrastiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_queries: int = Field(default=8_249, ge=1, description="Home Depot training queries")
    positives_per_query: int = Field(default=1, ge=1, description="examples per query, each its own draw")
    matching_examples: int = Field(default=0, ge=0, description="product matching examples")
    min_positive_relevance: float = Field(default=2.0, ge=1, le=3)
    hard_negatives: bool = False
    max_negative_relevance: float = Field(default=1.67, ge=1, le=3)
    symmetric: bool = Field(default=True, description="also rank the queries of the batch for each title")
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=64, ge=2)
    lr: float = Field(default=1e-4, gt=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    max_length: int = Field(default=32, ge=8)
    scale: float = Field(
        default=20.0, gt=0, description="1 / temperature of the softmax over cosine similarities"
    )
    freeze_word_embeddings: bool = False
    freeze_lower_layers: int = Field(
        default=0, ge=0, description="the embeddings and this many lowest layers"
    )
    seed: int = 0
    threads: int = Field(default=2, ge=1)


def search_examples(cfg: ContrastiveConfig, rng: random.Random) -> list[Example]:
    """`positives_per_query` examples of each of `max_queries` training queries that have a relevant title.
    Hard negatives are judged titles of the same query: BM25-mined ones (the best lexical match among other
    queries' titles) were tried and lost 0.02 NDCG@10 over the catalog, many being relevant products that
    raters happened to judge under another query."""
    every_query = load_homedepot("train")
    # Each title's best judgement for a query text: a few texts have two query ids, and a few titles two
    # products judged differently (one at 1.33, one at 3): such a title is no negative.
    best: dict[str, dict[str, float]] = defaultdict(dict)
    for q in every_query:
        for title, relevance in zip(q.titles, q.relevance, strict=True):
            best[q.text][title] = max(relevance, best[q.text].get(title, 1.0))
    queries = [q for q in every_query if max(q.relevance) >= cfg.min_positive_relevance]
    queries = rng.sample(queries, min(cfg.max_queries, len(queries)))
    every_title = sorted({t for q in queries for t in q.titles})
    judged = [best[q.text] for q in queries]
    positives = [[t for t, r in titles.items() if r >= cfg.min_positive_relevance] for titles in judged]
    weights = [[titles[t] - 1 for t in chosen] for titles, chosen in zip(judged, positives, strict=True)]
    negatives = [[t for t, r in titles.items() if r <= cfg.max_negative_relevance] for titles in judged]
    examples: list[Example] = []
    for _ in range(cfg.positives_per_query):
        for i, query in enumerate(queries):
            positive = rng.choices(positives[i], weights=weights[i])[0]
            if not cfg.hard_negatives:
                examples.append((query.text, positive))
            elif negatives[i]:
                examples.append((query.text, positive, rng.choice(negatives[i])))
            else:
                negative = rng.choice(every_title)
                while negative in judged[i]:
                    negative = rng.choice(every_title)
                examples.append((query.text, positive, negative))
    return examples


def matching_examples(cfg: ContrastiveConfig, rng: random.Random) -> list[Example]:
    pairs: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in read_tsv(data_root() / "ranking" / "product_matching_train.tsv"):
        pairs[row["left_title"]][row["match"] == "1"].append(row["right_title"])
    examples: list[Example] = [
        (left, rng.choice(same), rng.choice(other)) if cfg.hard_negatives else (left, rng.choice(same))
        for left, (other, same) in sorted(pairs.items())
        if same and other
    ]
    rng.shuffle(examples)
    return examples[: cfg.matching_examples]


def training_examples(cfg: ContrastiveConfig) -> list[Example]:
    rng = random.Random(cfg.seed)
    examples = search_examples(cfg, rng) + matching_examples(cfg, rng)
    rng.shuffle(examples)
    return examples


def distinct_text_batches(
    examples: Sequence[Example], batch_size: int, rng: random.Random
) -> list[list[Example]]:
    """Batches of titles of similar length (windows sorted by the positive's length, then shuffled) in which
    no text appears twice: an example that would repeat one waits for the next batch."""
    from conversion.finetune import length_grouped_batches

    groups = length_grouped_batches([len(e[1]) for e in examples], batch_size, rng, group=20)
    batches: list[list[Example]] = []
    waiting: list[Example] = []
    for group in groups:
        batch, waiting = _fill(waiting + [examples[i] for i in group], batch_size)
        batches.append(batch)
    while waiting:
        batch, waiting = _fill(waiting, batch_size)
        batches.append(batch)
    return batches


def _fill(candidates: list[Example], batch_size: int) -> tuple[list[Example], list[Example]]:
    """A batch of the first candidates that share no text (at least the first), and the rest."""
    batch: list[Example] = []
    rest: list[Example] = []
    seen: set[str] = set()
    for example in candidates:
        if len(batch) < batch_size and seen.isdisjoint(example):
            batch.append(example)
            seen.update(example)
        else:
            rest.append(example)
    return batch, rest


def finetune_bi_encoder(base_dir: Path, out_dir: Path, cfg: ContrastiveConfig) -> Path:
    """Fine-tunes the sentence-transformers model in `base_dir`; writes an HF checkpoint to `out_dir`."""
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from conversion.checkpoint_dir import describe_input, save_trained_checkpoint
    from conversion.training import (
        adamw_with_warmup,
        mixed_precision,
        optimizer_step,
        sentence_encoder,
        training_precision,
    )

    model, encoder = sentence_encoder(base_dir, out_dir, cfg)
    examples = training_examples(cfg)
    directions: tuple[Literal["query_to_doc", "doc_to_query"], ...] = (
        ("query_to_doc", "doc_to_query") if cfg.symmetric else ("query_to_doc",)
    )
    loss_fn = MultipleNegativesRankingLoss(
        model, scale=cfg.scale, directions=directions, partition_mode="per_direction"
    )
    rng = random.Random(cfg.seed)
    epochs = [distinct_text_batches(examples, cfg.batch_size, rng) for _ in range(cfg.epochs)]
    steps = sum(len(batches) for batches in epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = adamw_with_warmup(params, cfg.lr, cfg.warmup_fraction, steps)
    print(
        f"fine-tuning {base_dir.name} as a bi-encoder on {len(examples)} examples of "
        f"{len(examples[0])} texts ({cfg.epochs} epoch(s), batch {cfg.batch_size}, lr {cfg.lr}, "
        f"max_length {cfg.max_length})"
    )
    started = time.perf_counter()
    model.train()
    with tqdm(total=steps, desc="bi-encoder fine-tune", unit="step") as bar:
        for batches in epochs:
            for batch in batches:
                features = [model.preprocess([e[column] for e in batch]) for column in range(len(batch[0]))]
                with mixed_precision():
                    loss = loss_fn(features, None)
                optimizer_step(loss, params, optimizer, scheduler, bar)
    print(f"training took {time.perf_counter() - started:.0f} s")
    model.eval()
    trained = {
        "trained_by": "contrastive",
        "settings": cfg.model_dump(mode="json"),
        "precision": training_precision(),
        "base": describe_input(base_dir),
        "data": {
            name: describe_input(data_root() / "ranking" / name)
            for name in ("homedepot_train.tsv", "product_matching_train.tsv")
        },
    }
    return save_trained_checkpoint(out_dir, encoder, model.tokenizer, trained)
