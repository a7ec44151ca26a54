import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from conversion.export import export_onnx
from conversion.factorize import FactorizeConfig, factorize_linear, factorize_model
from conversion.modeling import InferenceModule
from conversion.prune import count_parameters
from conversion.runners import ort_session, tokenize

from .compression_helpers import KIND_TEXTS, batches, load_hf, outputs, tokenizer_of


def test_error_falls_with_rank_and_full_rank_is_exact() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(24, 40)
    x = torch.randn(16, 24)
    with torch.no_grad():
        expected = linear(x)
        errors = [float((factorize_linear(linear, r)(x) - expected).norm()) for r in range(1, 25)]
        full = factorize_linear(linear, 24)(x)
    assert all(a >= b - 1e-5 for a, b in itertools.pairwise(errors))
    assert errors[0] > 10 * errors[-1]
    torch.testing.assert_close(full, expected, atol=1e-5, rtol=1e-5)


def test_factorized_model_is_smaller_and_exports(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    kind = "sequence-classification"
    path = tiny_checkpoints[kind]
    model, tok = load_hf(path, kind), tokenizer_of(path)
    data = batches(tok, KIND_TEXTS)
    before = count_parameters(model)
    reference = [outputs(model, b) for b in data]

    # hidden 32 -> FFN 64: rank 8 saves work; the 32x32 query at rank 20 would not, so it is left alone.
    factorize_model(model, FactorizeConfig(rank=8, targets=["intermediate.dense", "output.dense"]))
    factorize_model(model, FactorizeConfig(rank=20, targets=["attention.self.query"]))
    layer = model.bert.encoder.layer[0]
    assert isinstance(layer.intermediate.dense, nn.Sequential)
    assert [m.out_features for m in layer.intermediate.dense] == [8, 64]
    assert isinstance(layer.output.dense, nn.Sequential)
    assert isinstance(layer.attention.output.dense, nn.Linear)  # "output.dense" is the FFN's, not attention's
    assert isinstance(layer.attention.self.query, nn.Linear)
    assert count_parameters(model) < before
    for b, ref in zip(data, reference, strict=True):
        got = outputs(model, b)
        assert got.shape == ref.shape
        assert torch.isfinite(got).all()

    module = InferenceModule(model, kind, uses_token_type_ids=True).eval()
    graph = export_onnx(module, tmp_path / "f.onnx", vocab_size=model.config.vocab_size)
    batch = tokenize(tok, KIND_TEXTS, 64, module.input_names)
    (logits,) = ort_session(graph).run(None, batch)
    with torch.no_grad():
        expected = module(**{k: torch.from_numpy(v) for k, v in batch.items()}).numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_bad_factorization_settings_are_refused(tiny_checkpoints: dict[str, Path]) -> None:
    with pytest.raises(ValidationError, match="unknown factorization targets"):
        FactorizeConfig(rank=8, targets=["dense"])
    with pytest.raises(ValidationError):
        FactorizeConfig(rank=0)
    model = nn.Sequential(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="no Linear layer matches"):
        factorize_model(model, FactorizeConfig(rank=2))
