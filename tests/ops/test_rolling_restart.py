"""A rolling restart behind a real reverse proxy, under locust load, fails no request (429 aside).

Two "old" servers sit behind nginx. Each is replaced the way the Deployment replaces a pod
(maxSurge 1, maxUnavailable 0): a new server starts and becomes ready, joins the upstreams, then the
old one gets SIGTERM and drains. The first replacement is the worst case, where the proxy keeps sending
to the old server while it drains (endpoint removal lagging behind SIGTERM): its 503s and refused
connections must be retried by nginx. The second is the intended order: out of the upstreams first
(readiness; the reload returns once the new configuration serves), then SIGTERM while the old nginx
worker may still hold requests to it: those must finish.
"""

from __future__ import annotations

import collections
import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.run import format_summary, locust_command, read_summary
from tests.ops.processes import Nginx, Server
from tests.ops.tools import REPO

pytestmark = pytest.mark.integration

DRAIN_TIMEOUT_S = 10.0
_UPSTREAM = re.compile(r"up=([^\s,]+(?:, [^\s,]+)*) up_status=([^\s,]+(?:, [^\s,]+)*) ")


def wait_for_requests(nginx: Nginx, more_than: int, timeout_s: float = 60.0) -> int:
    """Blocks until nginx has logged more than `more_than` requests; returns the count."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = len(nginx.access_log())
        if count > more_than:
            return count
        time.sleep(0.2)
    raise TimeoutError(f"load stalled at {len(nginx.access_log())} requests")


def assert_drained(server: Server) -> None:
    """The server exits by itself within the drain timeout (plus start-up slack), after a clean lifespan
    shutdown. uvicorn re-raises the SIGTERM it handled, so a clean exit reads as -SIGTERM (143 in a pod)."""
    code = server.wait_exit(DRAIN_TIMEOUT_S + 20)
    log = server.log()
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log, log


@contextlib.contextmanager
def locust_load(url: str, out: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Locust against `url` until the block ends (bounded by its own run time), then stopped with
    SIGTERM, which lets running requests finish (--stop-timeout) and writes the CSVs."""
    command = locust_command(host=url, out=out, users=8, spawn_rate=8, run_time="150s", seed=11)
    with (out / "locust.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_rolling_restart_fails_no_request(tiny_store: Path, tmp_path: Path) -> None:
    env = {"INFERENCE_DRAIN_TIMEOUT_S": str(DRAIN_TIMEOUT_S)}
    servers: list[Server] = []

    def start_server() -> Server:
        server = Server(tiny_store, tmp_path, env=env)
        servers.append(server)
        return server

    out = tmp_path / "locust"
    out.mkdir()
    try:
        old_a, old_b = start_server(), start_server()
        old_a.wait_ready()
        old_b.wait_ready()
        with Nginx(tmp_path / "nginx", [old_a.port, old_b.port]) as nginx, locust_load(nginx.url, out):
            seen = wait_for_requests(nginx, 30)

            # 1. Worst case: the old server drains while the proxy still sends it requests.
            new_a = start_server()
            new_a.wait_ready()
            nginx.set_upstreams([old_a.port, old_b.port, new_a.port])
            seen = wait_for_requests(nginx, seen + 10)
            old_a.terminate()
            assert_drained(old_a)
            seen = wait_for_requests(nginx, seen + 20)  # the proxy notices the refused connections
            nginx.set_upstreams([old_b.port, new_a.port])

            # 2. As Kubernetes intends: out of the endpoints first, then SIGTERM and drain.
            new_b = start_server()
            new_b.wait_ready()
            nginx.set_upstreams([old_b.port, new_a.port, new_b.port])
            seen = wait_for_requests(nginx, seen + 10)
            nginx.set_upstreams([new_a.port, new_b.port])
            old_b.terminate()
            assert_drained(old_b)

            # The new pair carries the load alone. 40 more, not 30: locust's own count (asserted > 100 below)
            # trails nginx's log by the requests in flight when locust stops (98 against nginx's 101 once).
            wait_for_requests(nginx, seen + 40)
            access_log = nginx.access_log()
    finally:
        for server in servers:
            server.stop()

    # What the shoppers saw (locust) and what the proxy answered (nginx), both complete.
    summary = read_summary(out / "locust")
    statuses = collections.Counter(line.split()[0] for line in access_log)
    matches = [match for line in access_log if (match := _UPSTREAM.search(line))]
    upstream_fields = [match.group(1) for match in matches]
    retried = sum(1 for field in upstream_fields if "," in field)
    # What the first server answered when nginx moved a request on (502: refused or closed connection).
    retry_causes = collections.Counter(m.group(2).split(", ")[0] for m in matches if "," in m.group(2))
    by_port = collections.Counter(
        field.split(", ")[-1].rsplit(":", 1)[-1] for field in upstream_fields if field != "-"
    )
    counts = {
        "locust_requests": summary.total.requests,
        "locust_failures_excluding_429": summary.total.failures,
        "locust_shed_429": summary.total.shed,
        "nginx_requests": len(access_log),
        "nginx_statuses": dict(statuses),
        "nginx_retried_on_another_server": retried,
        "nginx_retry_causes": dict(retry_causes),
        "served_by": {
            name: by_port.get(str(server.port), 0)
            for name, server in zip(("old_a", "old_b", "new_a", "new_b"), servers, strict=True)
        },
    }
    (tmp_path / "rolling_restart_counts.json").write_text(json.dumps(counts, indent=2))
    print("\n" + format_summary(summary))
    print("rolling restart:", json.dumps(counts))

    assert summary.total.requests > 100
    assert summary.total.failures == 0, summary.failure_messages
    assert set(statuses) <= {"200", "429"}, statuses
    # Every server really took part: the old ones before they left, the new ones after they came.
    assert all(count > 0 for count in counts["served_by"].values()), counts  # type: ignore[attr-defined]
