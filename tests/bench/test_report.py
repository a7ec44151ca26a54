import json
import math
from pathlib import Path

from bench.report import Row, fill_ratios, format_table, plot_png, target_lines, write_json


def row(variant: str, endpoint: str, c: int, texts: float, p99: float = 100.0) -> Row:
    return Row(
        variant, variant.upper(), endpoint, c, texts, texts, p99 / 2, p99 * 0.9, p99, 0, 150.0, 5.0, 300.0
    )


def rows() -> list[Row]:
    return [
        row("baseline", "sentiment", 32, 20.0, 1500.0),
        row("baseline", "sentiment", 64, 20.0, 3000.0),
        row("int8-batch", "sentiment", 32, 400.0, 120.0),
        row("int8-batch", "sentiment", 64, 300.0, 200.0),
        row("fp32-batch", "sentiment", 32, 400.0, 151.0),
        row("int8-batch", "rank", 32, 1000.0),
    ]


def test_ratios_are_against_the_baseline_at_the_same_cell() -> None:
    table = rows()
    fill_ratios(table)
    assert table[0].ratio == 1.0
    assert table[2].ratio == 20.0
    assert table[3].ratio == 15.0
    assert table[5].ratio is None  # no baseline rank cell


def test_targets_need_both_the_ratio_and_the_p99() -> None:
    table = rows()
    fill_ratios(table)
    lines = target_lines(table)
    assert any(line.startswith("PASS") and "INT8-BATCH" in line and "c=32" in line for line in lines)
    assert any(
        line.startswith("FAIL") and "INT8-BATCH" in line and "c=64" in line for line in lines
    )  # 15x < 18x
    assert any(
        line.startswith("FAIL") and "FP32-BATCH" in line and "c=32" in line for line in lines
    )  # p99 151
    assert not any("BASELINE" in line for line in lines)


def test_table_has_one_line_per_cell_and_dashes_for_missing_values() -> None:
    table = rows()
    table.append(Row("x", "X", "recommend", 1, 0.0, 0.0, math.nan, math.nan, math.nan, 3, None, 0.0, None))
    fill_ratios(table)
    text = format_table(table)
    lines = text.splitlines()
    assert len(lines) == 2 + len(table)
    assert lines[-1].count("| - ") >= 4
    assert "20.0×" in text


def test_json_round_trip_and_png(tmp_path: Path) -> None:
    table = rows()
    fill_ratios(table)
    write_json(tmp_path / "out" / "r.json", {"command": "x"}, table)
    data = json.loads((tmp_path / "out" / "r.json").read_text())
    assert data["meta"] == {"command": "x"}
    assert [r["texts_per_s"] for r in data["rows"]] == [r.texts_per_s for r in table]
    plot_png(tmp_path / "out" / "r.png", table, "title")
    assert (tmp_path / "out" / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_survives_cells_without_positive_values(tmp_path: Path) -> None:
    empty = [Row("baseline", "B", "rank", 1, 0.0, 0.0, math.nan, math.nan, math.nan, 0, None, 0.0, None)]
    plot_png(tmp_path / "e.png", empty, "t")
    assert (tmp_path / "e.png").stat().st_size > 0
