"""The soak benchmark (loadtest/soak.py): its hostile bodies, its per-minute arithmetic, and a short real run
against a server it starts on the tiny store."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.hostile import CASES, HOSTILE_PREFIX, MAX_CHARS_PER_TEXT, acceptable
from loadtest.soak import listener_pid, sample_times
from loadtest.soak_stats import Recorder, RssSample, format_report, percentile, rss_summary, summarize
from tests.ops.tools import REPO


def test_hostile_bodies_carry_what_they_claim() -> None:
    surrogate = json.loads(CASES["lone high surrogate"]("#1").body)["texts"][0]
    with pytest.raises(UnicodeEncodeError):
        surrogate.encode("utf-8")
    emoji = json.loads(CASES["4096 emoji"]("#123").body)["texts"][0]
    assert len(emoji) == MAX_CHARS_PER_TEXT
    assert "\x00" in json.loads(CASES["NUL characters"]("#1").body)["texts"][0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(CASES["truncated JSON"]("#1").body)
    requests = [build("#7") for build in CASES.values()]
    assert all(r.name.startswith(HOSTILE_PREFIX) for r in requests)
    assert {r.endpoint for r in requests} == {"sentiment", "rank", "recommend"}
    assert len({r.name for r in requests}) == len(requests)


def test_hostile_requests_may_be_refused_but_never_fail() -> None:
    assert acceptable(200)
    assert acceptable(413)
    assert acceptable(422)
    assert not acceptable(500)
    assert not acceptable(503)
    assert not acceptable(0)  # no answer at all
    assert not acceptable(301)


def _add(recorder: Recorder, t: float, ms: float, status: int = 200, name: str = "review page") -> None:
    failure = None if acceptable(status) and status != 429 else f"HTTP {status}"
    if status == 429:
        failure = "shed: 429 queue full"
    recorder.add(
        name=name,
        url="http://127.0.0.1:1/v1/sentiment",
        status=status,
        response_ms=ms,
        start_time=t,
        failure=failure,
    )


def test_percentiles_are_per_minute_not_cumulative() -> None:
    recorder = Recorder(t0=1000.0, bucket_s=60.0)
    for n in range(1, 101):
        _add(recorder, 1000.0 + n * 0.5, float(n))  # minute 0: 1..100 ms
        _add(recorder, 1060.0 + n * 0.5, 500.0)  # minute 1: all 500 ms
    _add(recorder, 1065.0, 3.0, status=429)
    record = json.loads(json.dumps(recorder.to_json()))
    summary = summarize(record, [RssSample(10, 100, "start"), RssSample(119, 101, "end")], 5.0)
    rows = {(r["minute"], r["endpoint"]): r for r in summary["per_minute"] if r["kind"] == "normal"}
    assert rows[0, "sentiment"]["p99_ms"] == 99
    assert rows[1, "sentiment"]["p99_ms"] == 500
    assert rows[1, "all"]["shed"] == 1
    assert summary["status"]["normal"] == {"200": 200, "429": 1}
    assert summary["passed"], summary["problems"]


def test_hostile_5xx_and_memory_growth_fail_the_soak() -> None:
    recorder = Recorder(t0=0.0)
    _add(recorder, 1.0, 5.0)
    _add(recorder, 2.0, 5.0, status=500, name=f"{HOSTILE_PREFIX} sentiment lone high surrogate")
    _add(recorder, 3.0, 5.0, status=422, name=f"{HOSTILE_PREFIX} sentiment truncated JSON")
    summary = summarize(recorder.to_json(), [RssSample(1, 100, "start"), RssSample(2, 106, "end")], 5.0)
    assert not summary["passed"]
    assert summary["hostile_5xx"] == 1
    assert summary["hostile_cases"][f"{HOSTILE_PREFIX} sentiment lone high surrogate"] == {"500": 1}
    assert any("5xx" in p for p in summary["problems"])
    assert any("RSS grew" in p for p in summary["problems"])
    report = format_report(summary)
    assert "sentiment lone high surrogate: 1 x 500" in report
    assert "growth +6.00% (goal < 5.0%) FAIL" in report
    assert "soak FAILED" in report


def test_rss_growth_goal() -> None:
    assert rss_summary([RssSample(0, 200, "start"), RssSample(9, 209, "end")], 5.0)["passed"]
    assert not rss_summary([RssSample(0, 200, "start"), RssSample(9, 210, "end")], 5.0)["passed"]
    assert rss_summary([RssSample(9, 210, "end")], 5.0)["passed"] is None


def test_percentile_and_sample_times() -> None:
    assert percentile({}, 0.99) is None
    assert percentile({10: 98, 20: 1, 900: 1}, 0.99) == 20
    assert sample_times(180, 60, 60) == [(60, "start"), (120, "minute")]
    assert sample_times(15, 3.75, 5) == [(3.75, "start"), (5, "minute"), (10, "minute")]


def test_listener_pid_finds_the_listening_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert listener_pid(f"http://127.0.0.1:{port}") == os.getpid()
    assert listener_pid("http://example.com:80") is None


@pytest.mark.integration
def test_short_soak_reports_rss_status_counts_and_minutes(tiny_store: Path, tmp_path: Path) -> None:
    """15 s of load in 5 s buckets against a server the soak starts itself. The service may still answer
    some hostile texts with 5xx (then the soak fails, exit 1): only the reporting is checked here."""
    out = tmp_path / "soak"
    result = subprocess.run(
        [
            sys.executable, "-m", "loadtest.soak", "--store", str(tiny_store), "--out", str(out),
            "--seconds", "15", "--warmup-s", "4", "--sample-s", "5", "--bucket-s", "5",
            "--users", "4", "--hostile-users", "2", "--spawn-rate", "10",
        ],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    print(result.stdout[-4000:])
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())

    rss = summary["rss"]
    assert rss["start_mib"] > 0
    assert rss["end_mib"] > 0
    assert isinstance(rss["growth_pct"], float)
    assert rss["samples"][0]["role"] == "idle"

    assert summary["status"]["normal"].get("200", 0) > 0
    assert sum(summary["status"]["hostile"].values()) > 0
    assert summary["hostile_cases"]
    minutes = {r["minute"] for r in summary["per_minute"] if r["endpoint"] == "all" and r["p99_ms"]}
    assert len(minutes) >= 2
    assert summary["passed"] == (result.returncode == 0)
    if summary["hostile_5xx"]:
        assert not summary["passed"]
        assert "hostile cases answered 5xx" in result.stdout

    assert "RSS: idle" in result.stdout
    assert "p99 latency per minute" in result.stdout
    assert "responses by status" in result.stdout
    for artefact in ("locust_stats.csv", "report.html", "locust.log", "server.log", "soak_record.json"):
        assert (out / artefact).is_file(), artefact
