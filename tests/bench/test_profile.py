import pytest

from bench.profile import parse_collapsed, report, shares

RAW = [
    "process 1;thread (0x1);_worker (app/engine.py:250);run (onnxruntime/capi/session.py:270) 60",
    "process 1;thread (0x1);_worker (app/engine.py:250);tokenize (app/runtime.py:90) 10",
    "process 1;thread (0x2);run (asyncio/runners.py:118);handle (app/api/sentiment.py:40) 30",
    "garbage line without count",
    "",
]


def test_collapsed_lines_parse_into_stacks_and_counts() -> None:
    stacks = parse_collapsed(RAW)
    assert len(stacks) == 3
    frames, count = stacks[0]
    assert count == 60
    assert frames[-1] == "run (onnxruntime/capi/session.py:270)"


def test_inclusive_and_self_shares_skip_process_and_thread_frames() -> None:
    inclusive, leaf, total = shares(parse_collapsed(RAW))
    assert total == 100
    assert inclusive["_worker (engine.py)"] == 70
    assert leaf["run (session.py)"] == 60
    assert leaf["handle (sentiment.py)"] == 30
    assert not any(name.startswith(("process", "thread")) for name in inclusive)


def test_report_prints_percentages() -> None:
    text = report(parse_collapsed(RAW))
    assert "100 samples" in text
    assert "60.0%  run (session.py)" in text
    assert report([]) == "no samples"


@pytest.mark.parametrize("frame", ["<module> (x.py:1)", "main"])
def test_frames_without_a_location_keep_their_name(frame: str) -> None:
    _, leaf, _ = shares([([frame], 1)])
    assert next(iter(leaf)).startswith(frame.split(" ")[0])
