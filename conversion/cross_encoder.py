"""Fine-tune a cross-encoder for product search: query and title read together, one relevance logit.

Examples come from the Home Depot training queries only (validation queries are never read):
- every judged (query, title) pair, its target the rating scaled to 0..1 (`(relevance - 1) / 2`);
- `other_titles` titles judged under other queries, target 0: a first stage's shortlist over a whole catalog
  holds many products no rater saw for this query, and the judged ones alone are mostly relevant (mean
  relevance 2.4), so without them the model never learns what an unrelated product looks like.

The loss is binary cross-entropy on the logit (pointwise, as sentence-transformers' CrossEncoder trains
graded pairs); the service answers its sigmoid, the predicted relevance in 0..1.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from conversion.data import data_root
from conversion.data.homedepot import load_homedepot


class CrossEncoderConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # 1,000 queries train in ~105-130 s on 2 cores; 2,000 (~230 s) reached 0.9326 / 0.5551 NDCG@10 (rerank /
    # two-stage catalog) against 0.9313 / 0.5295: more than set-up time allows (docs/conversion.md).
    max_queries: int = Field(
        default=1_000, ge=1, description="a seeded sample of Home Depot training queries"
    )
    other_titles: int = Field(
        default=2, ge=0, description="per query: titles of other queries, as irrelevant (target 0)"
    )
    epochs: int = Field(default=1, ge=1)
    batch_size: int = Field(default=32, ge=2)
    lr: float = Field(default=1e-4, gt=0)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    max_length: int = Field(default=48, ge=8, description="query and title together, in tokens")
    drop_layers: list[int] = Field(
        default_factory=list,
        description="the base's encoder layers removed before training: fewer layers make training, the gate "
        "and every served pair proportionally cheaper",
    )
    freeze_word_embeddings: bool = True
    freeze_lower_layers: int = Field(
        default=2, ge=0, description="the embeddings and this many lowest layers"
    )
    seed: int = 0
    threads: int = Field(default=2, ge=1)


@dataclass(frozen=True)
class ScoredPair:
    query: str
    title: str
    target: float  # 0 .. 1


def training_pairs(cfg: CrossEncoderConfig) -> list[ScoredPair]:
    """The judged pairs of a seeded sample of training queries plus `other_titles` unjudged titles each."""
    rng = random.Random(cfg.seed)
    queries = load_homedepot("train", max_queries=cfg.max_queries, seed=cfg.seed)
    every_title = sorted({t for q in load_homedepot("train") for t in q.titles})
    pairs: list[ScoredPair] = []
    for query in queries:
        own = set(query.titles)
        for title, relevance in zip(query.titles, query.relevance, strict=True):
            pairs.append(ScoredPair(query.text, title, (relevance - 1.0) / 2.0))
        drawn = 0
        while drawn < cfg.other_titles:
            title = rng.choice(every_title)
            if title not in own:
                pairs.append(ScoredPair(query.text, title, 0.0))
                drawn += 1
    rng.shuffle(pairs)
    return pairs


def finetune_cross_encoder(base_dir: Path, out_dir: Path, cfg: CrossEncoderConfig) -> Path:
    """Fine-tunes the BERT in `base_dir` with a fresh one-logit head; writes an HF checkpoint to `out_dir`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from conversion.checkpoint import check_checkpoint_dir
    from conversion.checkpoint_dir import check_replaceable, describe_input, save_trained_checkpoint
    from conversion.finetune import freeze_lower_layers, length_grouped_batches
    from conversion.prune import drop_layers
    from conversion.training import adamw_with_warmup, optimizer_step

    check_checkpoint_dir(base_dir)
    check_replaceable(out_dir)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, local_files_only=True)  # type: ignore[no-untyped-call]
    model = AutoModelForSequenceClassification.from_pretrained(
        base_dir, num_labels=1, use_safetensors=True, local_files_only=True
    )
    drop_layers(model, cfg.drop_layers)
    freeze_lower_layers(model, cfg.freeze_lower_layers)
    if cfg.freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    pairs = training_pairs(cfg)
    rng = random.Random(cfg.seed)
    lengths = [len(p.query) + len(p.title) for p in pairs]
    steps = math.ceil(len(pairs) / cfg.batch_size) * cfg.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = adamw_with_warmup(params, cfg.lr, cfg.warmup_fraction, steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    print(
        f"fine-tuning {base_dir.name} as a cross-encoder on {len(pairs)} (query, title) pairs of "
        f"{cfg.max_queries} Home Depot training queries ({cfg.epochs} epoch(s), batch {cfg.batch_size}, "
        f"lr {cfg.lr}, max_length {cfg.max_length}, {cfg.freeze_lower_layers} lower layer(s) frozen)"
    )
    started = time.perf_counter()
    model.train()
    with tqdm(total=steps, desc="cross-encoder fine-tune", unit="step") as bar:
        for _ in range(cfg.epochs):
            for batch in length_grouped_batches(lengths, cfg.batch_size, rng):
                chosen = [pairs[i] for i in batch]
                enc = tokenizer(
                    [p.query for p in chosen],
                    [p.title for p in chosen],
                    padding=True,
                    truncation=True,
                    max_length=cfg.max_length,
                    return_tensors="pt",
                )
                logits = model(**enc).logits[:, 0]
                loss = loss_fn(logits, torch.tensor([p.target for p in chosen]))
                optimizer_step(loss, params, optimizer, scheduler, bar)
    print(f"training took {time.perf_counter() - started:.0f} s")
    model.eval()
    trained = {
        "trained_by": "cross-encoder",
        "settings": cfg.model_dump(mode="json"),
        "base": describe_input(base_dir),
        "data": {"homedepot_train.tsv": describe_input(data_root() / "ranking" / "homedepot_train.tsv")},
    }
    return save_trained_checkpoint(out_dir, model, tokenizer, trained)
