"""Export the PyTorch reference to ONNX with the legacy exporter (its graph fuses fully in onnxruntime)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from conversion.modeling import InferenceModule


def export_onnx(module: InferenceModule, out_path: Path, *, opset: int = 17, vocab_size: int = 100) -> Path:
    """Writes `out_path`: int64 inputs [batch, sequence], one output named per the manifest contract."""
    module = module.eval()
    batch, seq = 2, 8
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, max(vocab_size, 2), (batch, seq), generator=generator, dtype=torch.int64)
    attention_mask = torch.ones(batch, seq, dtype=torch.int64)
    attention_mask[1, seq // 2 :] = 0
    inputs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if module.uses_token_type_ids:
        inputs["token_type_ids"] = torch.zeros(batch, seq, dtype=torch.int64)
    names = module.input_names
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic_axes[module.output_name] = {0: "batch"}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (),
            str(out_path),
            kwargs=inputs,
            input_names=names,
            output_names=[module.output_name],
            dynamic_axes=dynamic_axes,
            opset_version=opset,
            dynamo=False,
            do_constant_folding=True,
        )
    return out_path
