"""Small helpers shared by the pruning, factorization and distillation tests (tiny random BERTs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

KIND_TEXTS = [
    "Ok",
    "Thanks!",
    "The battery died after two days and the charger broke too.",
    "great coffee table for a small kitchen",
    "worst movie",
    "I love this phone, the sound is excellent and the screen is perfect.",
    "the lamp was cheap but the light is nice",
    "terrible service, we will not be back",
]


def load_hf(path: Path, kind: str) -> Any:
    common: dict[str, Any] = {"local_files_only": True, "use_safetensors": True}
    if kind == "bi-encoder":
        return AutoModel.from_pretrained(path, add_pooling_layer=False, **common).eval()
    return AutoModelForSequenceClassification.from_pretrained(path, **common).eval()


def tokenizer_of(path: Path) -> Any:
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def batches(tokenizer: Any, texts: list[str], size: int = 4) -> list[dict[str, torch.Tensor]]:
    return [
        dict(tokenizer(texts[i : i + size], padding=True, return_tensors="pt"))
        for i in range(0, len(texts), size)
    ]


@torch.no_grad()
def outputs(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    out = model(**batch)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state
