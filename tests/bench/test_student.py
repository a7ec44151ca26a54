from pathlib import Path

from bench.student import SHAPES, _rows, report
from tests.bench.test_variants import publish

SETS = ("sst2_validation", "amazon_multidomain_validation")


def _validation(teacher: float, artifact: float) -> dict[str, object]:
    metrics = [
        {"dataset": name, "metric": metric, "source": teacher, "artifact": artifact}
        for name in SETS
        for metric in ("accuracy", "balanced_accuracy")
    ]
    return {"passed": True, "metrics": metrics}


def _store(tmp_path: Path, student_accuracy: float, student_mb: float) -> list[Path]:
    store, built = tmp_path / "model_store", tmp_path / "built"
    student = {"prune": {"drop_layers": [1, 4]}, "quantize": {"method": "dynamic"}}
    publish(
        store,
        "review-sentiment",
        "1",
        "int8",
        recipe=student,
        validation=_validation(90.0, student_accuracy),
        size_bytes=int(student_mb * 1e6),
    )
    publish(
        built, "review-sentiment", "1", "fp32", recipe={"quantize": {"method": "none"}}, size_bytes=90_000_000
    )
    publish(
        built,
        "review-sentiment",
        "2",
        "int8",
        recipe={"quantize": {"method": "dynamic"}},
        validation=_validation(90.0, 89.9),
        size_bytes=23_000_000,
    )
    return [store, built]


def _latency(int8_ms: float, student_ms: float) -> dict[tuple[str, int, int], float]:
    by_label = {"fp32 teacher": 4 * int8_ms, "int8 teacher": int8_ms, "int8 student": student_ms}
    return {(label, b, s): ms for label, ms in by_label.items() for b, s in SHAPES}


def test_the_student_table_passes_a_student_within_every_target(tmp_path: Path) -> None:
    rows = _rows(_store(tmp_path, student_accuracy=89.5, student_mb=16.9))
    assert [r.label for r in rows] == ["fp32 teacher", "int8 teacher", "int8 student"]
    lines = report(rows, _latency(int8_ms=10.0, student_ms=5.0))
    table = "\n".join(lines)
    assert "amazon_multido" in lines[1]
    assert "PASS  student amazon_multidomain_validation: 89.50 vs fp32 teacher 90.00 (-0.50" in table
    assert "PASS  student b1xs64: 2.00x the plain int8 teacher" in table
    assert "PASS  student size: 18.8% of the fp32 teacher's ONNX" in table
    assert "FAIL" not in table


def test_the_student_table_names_each_missed_target(tmp_path: Path) -> None:
    rows = _rows(_store(tmp_path, student_accuracy=88.5, student_mb=30.0))
    table = "\n".join(report(rows, _latency(int8_ms=10.0, student_ms=6.0)))
    assert "FAIL  student sst2_validation: 88.50 vs fp32 teacher 90.00 (-1.50" in table
    assert "FAIL  student b8xs64: 1.67x the plain int8 teacher" in table
    assert "FAIL  student size: 33.3% of the fp32 teacher's ONNX" in table
