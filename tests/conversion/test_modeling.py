"""The exported module: a classifier's last layer runs for the [CLS] row only, with the same logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conversion.checkpoint import load_checkpoint
from conversion.modeling import cls_row_only

TEXTS = ["Ok", "The battery died after two days and the charger broke too.", "great sound"]


@pytest.mark.parametrize("kind", ["sequence-classification", "cross-encoder"])
def test_cls_only_last_layer_gives_the_full_models_logits(
    tiny_checkpoints: dict[str, Path], kind: str
) -> None:
    loaded = load_checkpoint(tiny_checkpoints[kind], kind)  # type: ignore[arg-type]
    assert loaded.module.cls_only
    batch = loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")  # padded rows too
    with torch.no_grad():
        full = loaded.module.model(**batch).logits
        with cls_row_only(loaded.module.model):
            cls = loaded.module.model(**batch).logits
        served = loaded.module(**batch)
        after = loaded.module.model(**batch, output_hidden_states=True)
    torch.testing.assert_close(cls, full, atol=1e-6, rtol=0)
    torch.testing.assert_close(served, cls, atol=0, rtol=0)
    assert after.hidden_states[-1].shape[1] == batch["input_ids"].shape[1]  # every row again outside


def test_bi_encoders_read_every_token(tiny_checkpoints: dict[str, Path]) -> None:
    assert not load_checkpoint(tiny_checkpoints["bi-encoder"], "bi-encoder").module.cls_only
