import pytest
import torch

from conversion.training import PRECISION_ENV, mixed_precision, training_precision


@pytest.mark.parametrize(("setting", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_training_forward_passes_multiply_in_the_configured_precision(
    monkeypatch: pytest.MonkeyPatch, setting: str, dtype: torch.dtype
) -> None:
    monkeypatch.setenv(PRECISION_ENV, setting)
    layer = torch.nn.Linear(4, 2)
    with mixed_precision():
        out = layer(torch.randn(3, 4))
        loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 0]))
    assert training_precision() == setting
    assert out.dtype == dtype
    assert loss.dtype == torch.float32  # losses stay fp32
    assert layer.weight.dtype == torch.float32  # so do the weights the optimizer updates


def test_auto_precision_is_bf16_only_where_the_cpu_multiplies_bf16_natively(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    assert training_precision() == ("bf16" if native else "fp32")
    monkeypatch.setenv(PRECISION_ENV, " AUTO ")
    assert training_precision() == ("bf16" if native else "fp32")


def test_an_unknown_precision_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRECISION_ENV, "fp16")
    with pytest.raises(ValueError, match="CONVERSION_TRAINING_PRECISION='fp16': expected auto, bf16 or fp32"):
        training_precision()
