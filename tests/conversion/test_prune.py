import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from pydantic import ValidationError

from conversion.checkpoint import load_checkpoint
from conversion.export import export_onnx
from conversion.prune import PruneConfig, count_parameters, drop_layers, encoder_layers, prune_model
from conversion.runners import ort_session, tokenize

from .compression_helpers import KIND_TEXTS, batches, load_hf, outputs, tokenizer_of

KINDS = ["sequence-classification", "cross-encoder", "bi-encoder"]
HALF = PruneConfig(heads_keep_fraction=0.5, ffn_keep_fraction=0.5, importance_texts=8)


def _silence_half(model: Any) -> None:
    """Makes heads 0-1 (of 4) and FFN neurons 0-31 (of 64) contribute nothing in every layer."""
    with torch.no_grad():
        for layer in encoder_layers(model):
            head = layer.attention.self.attention_head_size
            layer.attention.self.value.weight[: 2 * head] = 0
            layer.attention.self.value.bias[: 2 * head] = 0
            layer.output.dense.weight[:, :32] = 0


def _initializer_count(path: Path) -> int:
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


@pytest.mark.parametrize("kind", KINDS)
def test_pruning_the_least_important_half_keeps_outputs(tiny_checkpoints: dict[str, Path], kind: str) -> None:
    path = tiny_checkpoints[kind]
    model, tok = load_hf(path, kind), tokenizer_of(path)
    _silence_half(model)
    data = batches(tok, KIND_TEXTS)
    before = [outputs(model, b) for b in data]
    n_before = count_parameters(model)

    prune_model(model, HALF, data)

    # Importance found the silenced heads/neurons: removing them changes nothing.
    for b, expected in zip(data, before, strict=True):
        got = outputs(model, b)
        assert got.shape == expected.shape
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for layer in encoder_layers(model):
        assert layer.attention.self.num_attention_heads == 2
        assert layer.attention.pruned_heads == {0, 1}
        assert layer.intermediate.dense.out_features == 32
        assert layer.output.dense.in_features == 32
    assert model.config.intermediate_size == 32
    assert count_parameters(model) < n_before


def test_pruned_checkpoint_saves_reloads_and_exports_a_smaller_graph(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    kind = "sequence-classification"
    source = tiny_checkpoints[kind]
    model, tok = load_hf(source, kind), tokenizer_of(source)
    data = batches(tok, KIND_TEXTS)
    prune_model(model, PruneConfig(heads_keep_fraction=0.5, ffn_keep_fraction=0.25, importance_texts=8), data)
    model.save_pretrained(tmp_path / "pruned", safe_serialization=True)
    tok.save_pretrained(tmp_path / "pruned")

    # A1's loader refuses missing weights: a clean reload proves the config describes the pruned shapes.
    original = load_checkpoint(source, kind)
    pruned = load_checkpoint(tmp_path / "pruned", kind)
    assert pruned.config["intermediate_size"] == 16
    assert {int(k): sorted(v) for k, v in pruned.config["pruned_heads"].items()} == {
        i: sorted(h) for i, h in enumerate(layer.attention.pruned_heads for layer in encoder_layers(model))
    }
    for b in data:
        torch.testing.assert_close(outputs(pruned.module.model, b), outputs(model, b))

    full_graph = export_onnx(
        original.module, tmp_path / "full.onnx", vocab_size=original.config["vocab_size"]
    )
    small_graph = export_onnx(pruned.module, tmp_path / "pruned.onnx", vocab_size=pruned.config["vocab_size"])
    assert _initializer_count(small_graph) < _initializer_count(full_graph)
    assert small_graph.stat().st_size < full_graph.stat().st_size
    batch = tokenize(pruned.tokenizer, KIND_TEXTS, 64, pruned.module.input_names)
    (logits,) = ort_session(small_graph).run(None, batch)
    with torch.no_grad():
        expected = pruned.module(**{k: torch.from_numpy(v) for k, v in batch.items()}).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


@pytest.mark.parametrize("kind", ["sequence-classification", "bi-encoder"])
def test_dropping_layers_updates_the_config_and_reloads(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    model = load_hf(tiny_checkpoints[kind], kind)
    model.prune_heads({1: [3]})
    top_layer = copy.deepcopy(encoder_layers(model)[1])
    prune_model(model, PruneConfig(drop_layers=[0]), [])
    assert model.config.num_hidden_layers == 1
    assert model.config.pruned_heads == {0: [3]}  # renumbered: old layer 1 is now layer 0
    assert torch.equal(
        encoder_layers(model)[0].intermediate.dense.weight, top_layer.intermediate.dense.weight
    )
    model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = load_hf(tmp_path, kind)
    assert len(encoder_layers(reloaded)) == 1
    assert encoder_layers(reloaded)[0].attention.self.num_attention_heads == 3


def test_pruning_twice_counts_heads_already_pruned(tiny_checkpoints: dict[str, Path]) -> None:
    kind = "sequence-classification"
    model, tok = load_hf(tiny_checkpoints[kind], kind), tokenizer_of(tiny_checkpoints[kind])
    data = batches(tok, KIND_TEXTS)
    prune_model(model, PruneConfig(heads_keep_fraction=0.75, importance_texts=8), data)
    prune_model(model, PruneConfig(heads_keep_fraction=0.5, importance_texts=8), data)
    for layer in encoder_layers(model):
        assert layer.attention.self.num_attention_heads == 2  # 4 -> 3 -> 2 (rounded)
        assert len(layer.attention.pruned_heads) == 2
    assert torch.isfinite(outputs(model, data[0])).all()


def test_bad_prune_settings_are_refused(tiny_checkpoints: dict[str, Path]) -> None:
    model = load_hf(tiny_checkpoints["bi-encoder"], "bi-encoder")
    with pytest.raises(ValueError, match="out of range"):
        drop_layers(model, [5])
    with pytest.raises(ValueError, match="all 2 layers"):
        drop_layers(model, [0, 1])
    with pytest.raises(ValueError, match="no importance batches"):
        prune_model(model, HALF, [])
    with pytest.raises(ValidationError, match="greater than 0"):
        PruneConfig(heads_keep_fraction=0)
    with pytest.raises(ValidationError, match="Extra inputs"):
        PruneConfig(unknown=1)  # type: ignore[call-arg]
