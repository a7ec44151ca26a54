"""Tiny random-initialised BERT checkpoints (real WordPiece tokenizer, safetensors) for fast tests."""

from __future__ import annotations

import string
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

from conversion.kinds import ModelKind

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SENTIMENT_LABELS = ["negative", "positive"]

# Enough real words that reviews, queries and product names tokenize to words, not only characters.
_WORDS = [
    "the",
    "a",
    "an",
    "and",
    "or",
    "but",
    "not",
    "no",
    "is",
    "was",
    "are",
    "were",
    "be",
    "been",
    "it",
    "this",
    "that",
    "these",
    "those",
    "i",
    "you",
    "he",
    "she",
    "we",
    "they",
    "my",
    "your",
    "our",
    "their",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
    "at",
    "by",
    "from",
    "as",
    "up",
    "down",
    "out",
    "over",
    "under",
    "after",
    "before",
    "very",
    "too",
    "so",
    "just",
    "only",
    "good",
    "great",
    "best",
    "nice",
    "love",
    "loved",
    "like",
    "liked",
    "happy",
    "excellent",
    "perfect",
    "amazing",
    "works",
    "worked",
    "recommend",
    "fine",
    "bad",
    "worst",
    "poor",
    "terrible",
    "awful",
    "hate",
    "hated",
    "broke",
    "broken",
    "disappointed",
    "waste",
    "problem",
    "return",
    "refund",
    "cheap",
    "movie",
    "film",
    "story",
    "actor",
    "acting",
    "plot",
    "scene",
    "funny",
    "boring",
    "slow",
    "fast",
    "product",
    "phone",
    "battery",
    "case",
    "charger",
    "quality",
    "price",
    "sound",
    "screen",
    "headset",
    "ear",
    "earbuds",
    "wireless",
    "bluetooth",
    "table",
    "chair",
    "sofa",
    "bed",
    "lamp",
    "rug",
    "desk",
    "coffee",
    "kitchen",
    "bath",
    "outdoor",
    "wood",
    "metal",
    "white",
    "black",
    "small",
    "large",
    "set",
    "storage",
    "shelf",
    "cabinet",
    "mirror",
    "light",
    "food",
    "service",
    "place",
    "restaurant",
    "staff",
    "time",
    "day",
    "days",
    "back",
    "again",
    "would",
    "will",
    "could",
    "should",
    "can",
    "did",
    "do",
    "does",
]


def _vocab() -> list[str]:
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    suffixes = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    words = list(dict.fromkeys(_WORDS))
    return SPECIAL_TOKENS + chars + suffixes + [w for w in words if w not in chars]


def make_tokenizer(vocab: list[str]) -> BertTokenizerFast:
    tok = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return BertTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=True,
        model_max_length=128,
    )


def make_tiny_checkpoint(out_dir: Path, kind: ModelKind, seed: int = 0) -> Path:
    """Writes a 2-layer, hidden-32, 4-head BERT of `kind` to `out_dir` (config, safetensors, tokenizer)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = _vocab()
    config = BertConfig(  # type: ignore[no-untyped-call]
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model: torch.nn.Module
    if kind == "sequence-classification":
        config.num_labels = len(SENTIMENT_LABELS)
        config.id2label = dict(enumerate(SENTIMENT_LABELS))
        config.label2id = {label: i for i, label in enumerate(SENTIMENT_LABELS)}
        model = BertForSequenceClassification(config)  # type: ignore[no-untyped-call]
    elif kind == "cross-encoder":
        config.num_labels = 1
        model = BertForSequenceClassification(config)  # type: ignore[no-untyped-call]
    elif kind == "bi-encoder":
        model = BertModel(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]
    else:
        raise ValueError(f"unknown model kind {kind!r}")
    model.save_pretrained(out_dir, safe_serialization=True)
    make_tokenizer(vocab).save_pretrained(out_dir)
    return out_dir


TINY_NAMES: dict[ModelKind, str] = {
    "sequence-classification": "review-sentiment",
    "bi-encoder": "product-embedder",
    "cross-encoder": "product-reranker",
}


def tiny_recipe_data(kind: ModelKind, source: Path, name: str | None = None) -> dict[str, object]:
    """A recipe (as a dict) for a tiny model: int8 dynamic, small validation subsets, budgets a random
    model can meet (the gate's arithmetic is still exercised), a one-point benchmark."""
    return {
        "name": name or TINY_NAMES[kind],
        "source": str(source),
        "kind": kind,
        "max_sequence_length": 64,
        "quantize": {"method": "dynamic", "per_channel": True},
        "validation": {
            "batch_size": 32,
            "sentiment": {"max_examples": 48, "accuracy_drop_budget": 100.0, "min_balanced_accuracy": None},
            "ranking": {"queries": 16, "pool_reviews": 16, "ndcg_budget": 0.0},
            "relevance": {"queries": 24, "ndcg_drop_budget": 1.0, "baselines": ["bm25"]},
            "recommendation": {"enabled": False},
            "cross_encoder": {"queries": 8, "candidates": 5, "ndcg_budget": 0.0},
        },
        "benchmark": {"batch_sizes": [1, 4], "sequence_lengths": [16], "warmup": 1, "repeats": 3},
    }
