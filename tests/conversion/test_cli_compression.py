from pathlib import Path

import pytest
import yaml

from conversion.cli import main
from conversion.tiny import tiny_recipe_data

ROWS = [("great phone", 1), ("it broke", 0), ("I love it", 1), ("worst movie", 0)] * 4


def _tsv(path: Path) -> Path:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in ROWS), encoding="utf-8")
    return path


def test_finetune_then_distill_from_the_command_line(
    tiny_checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    train = _tsv(tmp_path / "train.tsv")
    base = str(tiny_checkpoints["bi-encoder"])
    teacher = tmp_path / "teacher"
    args = ["--base", base, "--train", str(train), "--out", str(teacher), "--max-train-texts", "12"]
    args += ["--heldout-texts", "4"]
    assert main(["finetune", *args, "--batch-size", "8"]) == 0
    assert (teacher / "model.safetensors").is_file()
    student = tmp_path / "student"
    args = ["--teacher", str(teacher), "--out", str(student), "--train-tsv", str(train), "--max-texts", "8"]
    assert main(["distill", *args, "--student-layers", "1"]) == 0
    assert '"num_hidden_layers": 1' in (student / "config.json").read_text()


def test_finetune_on_a_mix_from_the_command_line(
    tiny_checkpoints: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "teacher"
    base = ["finetune", "--base", str(tiny_checkpoints["bi-encoder"]), "--out", str(out)]
    small = ["--heldout-texts", "4", "--batch-size", "8", "--max-length", "32"]
    assert main([*base, "--mix", "sst2_train=16", "amazon_sandisk=8", *small]) == 0
    assert "16 sst2_train + 8 amazon_sandisk, classes balanced per set" in capsys.readouterr().out
    assert (out / "model.safetensors").is_file()
    assert main([*base, "--mix", "sst2_train"]) == 1
    assert "SET=COUNT" in capsys.readouterr().err
    assert main([*base, "--mix", "uci_amazon=10"]) == 1
    assert "invalid TrainingMix settings" in capsys.readouterr().err


def test_bad_settings_and_validation_sets_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["finetune", "--lr", "-1", "--out", str(tmp_path / "x")]) == 1
    assert "invalid FinetuneConfig settings" in capsys.readouterr().err
    val = tmp_path / "uci_amazon.tsv"
    val.write_text("text\tlabel\ngood\t1\n", encoding="utf-8")
    assert (
        main(["distill", "--teacher", str(tmp_path), "--out", str(tmp_path / "s"), "--train-tsv", str(val)])
        == 1
    )
    assert "validation set" in capsys.readouterr().err


def test_sweep_exits_non_zero_when_nothing_passes(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    data = tiny_recipe_data("bi-encoder", tiny_checkpoints["bi-encoder"])
    data["prune"] = {"heads_keep_fraction": 0.5, "importance_texts": 8}
    data["validation"]["ranking"]["ndcg_budget"] = 1.0
    recipe = tmp_path / "pruned.yaml"
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    store = tmp_path / "store"
    argv = ["sweep", "--recipes", str(recipe), "--store", str(store), "--plot", str(tmp_path / "p.png")]
    assert main(argv) == 1
    assert not store.exists()
    assert (tmp_path / "p.png").is_file()
