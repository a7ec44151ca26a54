"""The headless load test runs against a real server and its thresholds decide the exit code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.processes import Server
from tests.ops.tools import REPO

pytestmark = pytest.mark.integration


def run_loadtest(url: str, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest.run", "--host", url, "--out", str(out), "--timeout-s", "120", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_twenty_second_steady_run_passes_its_thresholds(tiny_server: Server, tmp_path: Path) -> None:
    result = run_loadtest(
        tiny_server.url, tmp_path, "--run-time", "20s", "--users", "8", "--spawn-rate", "8",
        "--max-failure-ratio", "0", "--max-p95-ms", "10000",
    )  # fmt: skip
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["total"]["requests"] > 20
    assert summary["total"]["failures"] == 0
    names = {row["name"].split(":")[0] for row in summary["rows"]}
    assert names == {"search page", "product page", "review page"}
    for artefact in ("locust_stats.csv", "locust_failures.csv", "locust_stats_history.csv", "report.html"):
        assert (tmp_path / artefact).is_file(), artefact


def test_failures_past_the_threshold_fail_the_run(tiny_store: Path, tmp_path: Path) -> None:
    """Against a server that wants a token the load test does not send, every request is a 401."""
    with Server(tiny_store, tmp_path, env={"INFERENCE_API_TOKEN": "a-token-the-load-test-lacks"}) as server:
        server.wait_ready()
        result = run_loadtest(server.url, tmp_path / "out", "--run-time", "4s", "--users", "2")
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "THRESHOLDS EXCEEDED" in result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failure_ratio"] == 1.0
    assert any("HTTP 401" in message for message in summary["failure_messages"])
