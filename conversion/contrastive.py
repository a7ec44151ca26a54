"""Fine-tune a bi-encoder for product search: contrastive, in-batch negatives plus a hard negative each.

Examples are (anchor, positive, hard negative) triples from the training splits only:
- Home Depot training queries: a title judged highly relevant, and one judged (nearly) irrelevant for the same
  query; a query without such a title gets a random title of another query.
- Product matching pairs: a title, a title of the same product, and a title judged another product for it.

The loss is sentence-transformers' MultipleNegativesRankingLoss (softmax over every positive and hard negative
in the batch), on mean-pooled, normalised embeddings: what the service computes.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from conversion.data import data_root, read_tsv
from conversion.data.homedepot import load_homedepot

Triple = tuple[str, str, str]


class ContrastiveConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_queries: int = Field(
        default=8_249, ge=1, description="Home Depot training queries (one example each)"
    )
    matching_triples: int = Field(default=2_000, ge=0, description="product matching examples")
    min_positive_relevance: float = Field(default=2.5, ge=1, le=3)
    max_negative_relevance: float = Field(default=1.67, ge=1, le=3)
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=5e-5, gt=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    max_length: int = Field(default=32, ge=8)
    scale: float = Field(
        default=20.0, gt=0, description="1 / temperature of the softmax over cosine similarities"
    )
    freeze_word_embeddings: bool = True
    freeze_lower_layers: int = Field(
        default=0, ge=0, description="the embeddings and this many lowest layers"
    )
    seed: int = 0
    threads: int = Field(default=2, ge=1)


def search_triples(cfg: ContrastiveConfig, rng: random.Random) -> list[Triple]:
    """One triple per query with a highly relevant title; its hard negative is a title judged (nearly)
    irrelevant for it, else a random title of another query. (BM25-mined negatives, the best lexical match
    among other queries' titles, were tried and lost 0.02 NDCG@10 on the catalog setting: many are relevant
    products that raters happened to judge under another query.)"""
    queries = load_homedepot("train")
    every_title = sorted({t for q in queries for t in q.titles})
    triples: list[Triple] = []
    for query in queries:
        judged = list(zip(query.titles, query.relevance, strict=True))
        positives = [t for t, r in judged if r >= cfg.min_positive_relevance]
        if not positives:
            continue
        negatives = [t for t, r in judged if r <= cfg.max_negative_relevance]
        if negatives:
            negative = rng.choice(negatives)
        else:
            own = set(query.titles)
            negative = rng.choice(every_title)
            while negative in own:
                negative = rng.choice(every_title)
        triples.append((query.text, rng.choice(positives), negative))
    rng.shuffle(triples)
    return triples[: cfg.max_queries]


def matching_triples(cfg: ContrastiveConfig, rng: random.Random) -> list[Triple]:
    pairs: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for row in read_tsv(data_root() / "ranking" / "product_matching_train.tsv"):
        pairs[row["left_title"]][row["match"] == "1"].append(row["right_title"])
    triples = [
        (left, rng.choice(same), rng.choice(other))
        for left, (other, same) in sorted(pairs.items())
        if same and other
    ]
    rng.shuffle(triples)
    return triples[: cfg.matching_triples]


def training_triples(cfg: ContrastiveConfig) -> list[Triple]:
    rng = random.Random(cfg.seed)
    triples = search_triples(cfg, rng) + matching_triples(cfg, rng)
    rng.shuffle(triples)
    return triples


def finetune_bi_encoder(base_dir: Path, out_dir: Path, cfg: ContrastiveConfig) -> Path:
    """Fine-tunes the sentence-transformers model in `base_dir`; writes an HF checkpoint to `out_dir`."""
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    from conversion.checkpoint_dir import describe_input, save_trained_checkpoint
    from conversion.training import adamw_with_warmup, optimizer_step, sentence_encoder

    model, encoder = sentence_encoder(base_dir, out_dir, cfg)
    triples = training_triples(cfg)
    loss_fn = MultipleNegativesRankingLoss(model, scale=cfg.scale)
    steps = math.ceil(len(triples) / cfg.batch_size) * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = adamw_with_warmup(params, cfg.lr, cfg.warmup_fraction, steps)
    print(
        f"fine-tuning {base_dir.name} as a bi-encoder on {len(triples)} (anchor, positive, hard negative) "
        f"triples ({cfg.epochs} epoch(s), batch {cfg.batch_size}, lr {cfg.lr}, max_length {cfg.max_length})"
    )
    rng = random.Random(cfg.seed)
    started = time.perf_counter()
    model.train()
    with tqdm(total=steps, desc="bi-encoder fine-tune", unit="step") as bar:
        for _ in range(cfg.epochs):
            order = list(range(len(triples)))
            rng.shuffle(order)
            for start in range(0, len(order), cfg.batch_size):
                batch = [triples[i] for i in order[start : start + cfg.batch_size]]
                features = [model.preprocess([t[column] for t in batch]) for column in range(3)]
                loss = loss_fn(features, None)
                optimizer_step(loss, params, optimizer, scheduler, bar)
    print(f"training took {time.perf_counter() - started:.0f} s")
    model.eval()
    trained = {
        "trained_by": "contrastive",
        "settings": cfg.model_dump(mode="json"),
        "base": describe_input(base_dir),
        "data": {
            name: describe_input(data_root() / "ranking" / name)
            for name in ("homedepot_train.tsv", "product_matching_train.tsv")
        },
    }
    return save_trained_checkpoint(out_dir, encoder, model.tokenizer, trained)
