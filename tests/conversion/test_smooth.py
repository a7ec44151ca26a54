import json
from pathlib import Path

import onnx
import pytest
import torch

from conversion.pipeline import build
from conversion.recipe import parse_recipe
from conversion.smooth import ffn_input_maxima, smooth_ffn_inputs
from conversion.tiny import tiny_recipe_data

from .compression_helpers import KIND_TEXTS, batches, load_hf, tokenizer_of


def _model_with_outlier_channels(path: Path) -> torch.nn.Module:
    """A tiny classifier whose FFN up-projections make a few intermediate channels ~30x larger."""
    model = load_hf(path, "sequence-classification")
    torch.manual_seed(0)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.ndim == 2:
                weight.normal_(0, 0.2)
        for layer in model.bert.encoder.layer:
            layer.intermediate.dense.weight[:2] *= 30.0
    return model.eval()


def _spread(maxima: list[torch.Tensor]) -> float:
    return max(float(m.max() / m.median()) for m in maxima)


def test_smoothing_keeps_the_outputs_and_flattens_the_ffn_inputs(tiny_checkpoints: dict[str, Path]) -> None:
    path = tiny_checkpoints["sequence-classification"]
    model, tok = _model_with_outlier_channels(path), tokenizer_of(path)
    data = batches(tok, KIND_TEXTS)
    with torch.no_grad():
        before = [model(**b).logits for b in data]
    spread_before = _spread(ffn_input_maxima(model, data))

    report = smooth_ffn_inputs(model, data, alpha=0.5)

    with torch.no_grad():
        after = [model(**b).logits for b in data]
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert _spread(ffn_input_maxima(model, data)) < spread_before / 3
    assert len(report) == len(model.bert.encoder.layer)
    assert all(r.scale_max > r.scale_min > 0 for r in report)


def test_alpha_outside_zero_to_one_is_refused(tiny_checkpoints: dict[str, Path]) -> None:
    path = tiny_checkpoints["sequence-classification"]
    model = load_hf(path, "sequence-classification")
    with pytest.raises(ValueError, match="alpha"):
        smooth_ffn_inputs(model, batches(tokenizer_of(path), KIND_TEXTS), alpha=1.5)


def test_a_smoothed_build_passes_parity_with_one_scaling_mul_per_layer(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    source = tiny_checkpoints["sequence-classification"]
    plain = tiny_recipe_data("sequence-classification", source)
    plain["quantize"] = {"method": "none"}
    smoothed = {**plain, "quantize": {"method": "none", "smooth_ffn_inputs": {"alpha": 0.5, "texts": 16}}}
    graphs = {}
    for label, data in (("plain", plain), ("smoothed", smoothed)):
        path = build(parse_recipe(data), tmp_path / label, quiet=True)
        manifest = json.loads((path / "manifest.json").read_text())
        graphs[label] = [n.op_type for n in onnx.load(str(path / manifest["onnx_file"])).graph.node]
    layers = json.loads((source / "config.json").read_text())["num_hidden_layers"]
    assert graphs["smoothed"].count("Mul") == graphs["plain"].count("Mul") + layers
