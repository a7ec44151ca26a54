"""Builds an fp16 MiniLM ONNX for the CUDA execution provider (fused by onnxruntime's transformer optimizer).

Model-level GPU figures need only the graph; it is written to a git-ignored folder and carried to the GPU
machine. `python -m bench.gpu_artifact --out artifacts/gpu`
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from bench.paths import minilm_path


def build_fp16(out_dir: Path) -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoModel

    from conversion.export import export_onnx
    from conversion.modeling import InferenceModule
    from conversion.optimize import optimize_onnx
    from conversion.quantize import convert_fp16

    source = minilm_path()
    model = AutoModel.from_pretrained(str(source))
    module = InferenceModule(model, "bi-encoder", uses_token_type_ids=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fp16-") as tmp:
        fp32 = export_onnx(module, Path(tmp) / "fp32.onnx", vocab_size=model.config.vocab_size)
        fused = Path(tmp) / "fused.onnx"
        report = optimize_onnx(fp32, fused, num_heads=12, hidden_size=384)
        print("fusions:", report)
        out = convert_fp16(fused, out_dir / "model.onnx")
    shutil.copyfile(source / "tokenizer.json", out_dir / "tokenizer.json")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("artifacts/gpu"))
    args = parser.parse_args()
    path = build_fp16(args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
