import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conversion import finetune as finetune_module
from conversion.checkpoint import load_checkpoint
from conversion.checkpoint_dir import MARKER, is_complete, partial_dir, read_marker
from conversion.data import DataError
from conversion.finetune import (
    FinetuneConfig,
    finetune,
    length_grouped_batches,
    read_labelled_tsv,
)
from conversion.hashing import sha256_dir, sha256_file
from conversion.training import training_precision

POSITIVE = ["great phone", "I love it", "excellent sound", "works perfect", "best chair", "nice lamp"]
NEGATIVE = ["terrible battery", "it broke", "worst movie", "waste of money", "awful service", "poor quality"]


def _write_tsv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows), encoding="utf-8")
    return path


def test_finetune_writes_a_reloadable_safetensors_classifier(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    base = tiny_checkpoints["bi-encoder"]  # a plain encoder, as the packaged sentence-transformers MiniLM
    rows = [(t, "1") for t in POSITIVE] * 3 + [(t, "negative") for t in NEGATIVE] * 3
    train = _write_tsv(tmp_path / "train.tsv", rows)
    cfg = FinetuneConfig(max_train_texts=30, heldout_texts=6, batch_size=12, lr=1e-3, freeze_lower_layers=1)
    out = finetune(base, train, tmp_path / "ft", cfg)

    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin"))
    loaded = load_checkpoint(out, "sequence-classification")  # refuses missing weights
    assert loaded.labels == ["negative", "positive"]
    weights = load_file(out / "model.safetensors")
    start = load_file(base / "model.safetensors")
    # Frozen: embeddings and layer 0. Trained: layer 1 and the new head.
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.0.intermediate.dense.weight"):
        assert torch.equal(weights[f"bert.{name}"], start[name])
    name = "encoder.layer.1.intermediate.dense.weight"
    assert not torch.equal(weights[f"bert.{name}"], start[name])
    assert "classifier.weight" in weights
    marker = read_marker(out)
    assert marker is not None
    assert (marker["trained_by"], marker["labels"]) == ("finetune", ["negative", "positive"])
    assert marker["settings"] == cfg.model_dump(mode="json")
    assert marker["precision"] == training_precision()
    assert marker["data"]["sha256"] == sha256_file(train)
    assert marker["base"]["sha256"] == sha256_dir(base)


def test_finetune_on_a_training_mix_records_the_mix_and_its_files(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from conversion.data import data_root
    from conversion.data.sentiment import TrainingMix

    mix = TrainingMix.model_validate({"sets": {"sst2_train": 24, "amazon_sandisk": 8}})
    cfg = FinetuneConfig(max_train_texts=100, heldout_texts=4, batch_size=8, max_length=32)
    out = finetune(tiny_checkpoints["bi-encoder"], mix, tmp_path / "ft", cfg)
    marker = read_marker(out)
    assert marker is not None
    assert marker["data"]["mix"] == mix.model_dump(mode="json")
    files = marker["data"]["files"]
    assert set(files) == {"sst2_train.tsv", "amazon_sandisk.tsv"}
    assert files["amazon_sandisk.tsv"]["sha256"] == sha256_file(
        data_root() / "sentiment" / "amazon_sandisk.tsv"
    )
    with pytest.raises(DataError, match="labels"):
        finetune(tiny_checkpoints["bi-encoder"], mix, tmp_path / "ft2", cfg, labels=["bad", "good"])


def test_an_interrupted_finetune_is_not_a_checkpoint_and_is_redone(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tiny_checkpoints["bi-encoder"]
    train = _write_tsv(tmp_path / "train.tsv", [(t, "1") for t in POSITIVE] + [(t, "0") for t in NEGATIVE])
    cfg = FinetuneConfig(max_train_texts=12, heldout_texts=0, batch_size=6)
    out = tmp_path / "ft"
    out.mkdir()  # what a run interrupted before checkpoints had a marker left: config, no weights
    (out / "config.json").write_text("{}", encoding="utf-8")

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(finetune_module, "length_grouped_batches", killed)
        with pytest.raises(KeyboardInterrupt):
            finetune(base, train, out, cfg)
    assert not is_complete(out)
    with monkeypatch.context() as patch:
        patch.setattr("transformers.PreTrainedTokenizerBase.save_pretrained", killed)
        with pytest.raises(KeyboardInterrupt):
            finetune(base, train, out, cfg)  # interrupted while saving: model saved, tokenizer not
    assert not is_complete(out)
    assert not partial_dir(out).exists()

    assert finetune(base, train, out, cfg) == out
    assert is_complete(out)
    assert (out / MARKER).is_file()
    assert load_checkpoint(out, "sequence-classification").labels == ["negative", "positive"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft", "train.tsv"]


def test_bad_training_files_get_clear_errors(tmp_path: Path) -> None:
    labels = ["negative", "positive"]
    with pytest.raises(DataError, match="no such file"):
        read_labelled_tsv(tmp_path / "missing.tsv", labels)
    (tmp_path / "h.tsv").write_text("sentence\tsentiment\ngood\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match="header"):
        read_labelled_tsv(tmp_path / "h.tsv", labels)
    with pytest.raises(DataError, match="unknown label '7'"):
        read_labelled_tsv(_write_tsv(tmp_path / "l.tsv", [("good", "1"), ("bad", "7")]), labels)
    (tmp_path / "c.tsv").write_text("text\tlabel\ngood\n", encoding="utf-8")
    with pytest.raises(DataError, match="2 tab-separated columns"):
        read_labelled_tsv(tmp_path / "c.tsv", labels)
    validation = _write_tsv(tmp_path / "sst2_validation.tsv", [("good", "1")])
    with pytest.raises(DataError, match="validation set"):
        finetune(tmp_path, validation, tmp_path / "out", FinetuneConfig())
    data = read_labelled_tsv(_write_tsv(tmp_path / "ok.tsv", [("good", "positive"), ("bad", "0")]), labels)
    assert data.labels == [1, 0]


def test_length_grouped_batches_cover_every_text_once_with_little_padding() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 200) for _ in range(1000)]
    batches = length_grouped_batches(lengths, 32, random.Random(1))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < 1.1 * sum(lengths)
