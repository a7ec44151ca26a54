import json
import shutil
from pathlib import Path

import pytest

from conversion.checkpoint import check_checkpoint_dir, check_safetensors, load_checkpoint
from conversion.errors import CheckpointError, CorruptCheckpointError, UnsafeCheckpointError
from conversion.hashing import sha256_dir


@pytest.fixture
def copy_of(tiny_checkpoints: dict[str, Path], tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(kind: str) -> Path:
        return Path(shutil.copytree(tiny_checkpoints[kind], tmp_path / kind))

    return make


@pytest.mark.parametrize(
    ("kind", "output", "width"),
    [
        ("sequence-classification", "logits", 2),
        ("cross-encoder", "logits", 1),
        ("bi-encoder", "embeddings", 32),
    ],
)
def test_loads_each_kind_in_eval_mode(
    tiny_checkpoints: dict[str, Path], kind: str, output: str, width: int
) -> None:
    import torch

    loaded = load_checkpoint(tiny_checkpoints[kind], kind)  # type: ignore[arg-type]
    assert not loaded.module.training
    assert loaded.module.output_name == output
    assert loaded.module.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    enc = loaded.tokenizer(["a good table", "ok"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        out = loaded.module(**enc)
    assert tuple(out.shape) == (2, width)
    if kind == "bi-encoder":
        assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    if kind == "sequence-classification":
        assert loaded.labels == ["negative", "positive"]
    assert json.loads(loaded.tokenizer_json)["model"]["type"] == "WordPiece"


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt", ".pkl"])
def test_refuses_pickled_weights_naming_the_file(copy_of, suffix: str) -> None:  # type: ignore[no-untyped-def]
    path = copy_of("sequence-classification")
    (path / f"pytorch_model{suffix}").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeCheckpointError, match=rf"pytorch_model\{suffix}"):
        load_checkpoint(path, "sequence-classification")


def test_refuses_truncated_safetensors(copy_of) -> None:  # type: ignore[no-untyped-def]
    path = copy_of("bi-encoder")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors.*truncated"):
        load_checkpoint(path, "bi-encoder")


@pytest.mark.parametrize(
    "content", [b"", b"\x05\x00", b"\xff" * 8 + b"{}", b"\x02\x00\x00\x00\x00\x00\x00\x00{x"]
)
def test_refuses_corrupt_safetensors_headers(tmp_path: Path, content: bytes) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(content)
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors"):
        check_safetensors(file)


def test_refuses_inconsistent_tensor_offsets(tmp_path: Path) -> None:
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}).encode()
    file = tmp_path / "model.safetensors"
    file.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 8)
    with pytest.raises(CorruptCheckpointError, match="offsets do not match"):
        check_safetensors(file)


def test_refuses_remote_code(copy_of) -> None:  # type: ignore[no-untyped-def]
    path = copy_of("sequence-classification")
    config = json.loads((path / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsafeCheckpointError, match="remote code"):
        check_checkpoint_dir(path)


def test_refuses_missing_weights_and_config(copy_of, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = copy_of("sequence-classification")
    (path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no \*\.safetensors"):
        check_checkpoint_dir(path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        check_checkpoint_dir(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        check_checkpoint_dir(tmp_path / "nowhere")


def test_refuses_half_loaded_model(tiny_checkpoints: dict[str, Path]) -> None:
    # A bare encoder has no classifier head: loading it as a cross-encoder would leave random weights.
    with pytest.raises(CheckpointError, match="weights missing"):
        load_checkpoint(tiny_checkpoints["bi-encoder"], "cross-encoder")


def test_source_hash_covers_names_and_contents(copy_of) -> None:  # type: ignore[no-untyped-def]
    path = copy_of("bi-encoder")
    before = sha256_dir(path)
    assert sha256_dir(path) == before
    (path / "vocab.txt").write_text((path / "vocab.txt").read_text() + "extra\n")
    assert sha256_dir(path) != before
