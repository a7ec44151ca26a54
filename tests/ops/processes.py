"""Real processes on loopback for the ops tests: uvicorn servers of the service, nginx in front of them.

Every wait is bounded; every process started here is stopped by its own handle.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.ops.tools import REPO, require_tool

READY_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def service_env(store: Path, **overrides: str) -> dict[str, str]:
    """Environment of a test server: the given store, lean on CPU (one session per model)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERENCE_")}
    env.update(
        {
            "INFERENCE_MODEL_STORE": str(store),
            "INFERENCE_SESSIONS_PER_MODEL": "1",
            "INFERENCE_LOG_LEVEL": "warning",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }
    )
    env.update(overrides)
    return env


class Server:
    """`python -m app` (as `make run` and the image start it) on 127.0.0.1 in its own process."""

    def __init__(
        self, store: Path, log_dir: Path, port: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"uvicorn-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=REPO,
            env=service_env(store, INFERENCE_HOST="127.0.0.1", INFERENCE_PORT=str(self.port), **(env or {})),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"server on {self.port} not ready within {timeout_s} s:\n{self.log()}")

    def terminate(self) -> None:
        """SIGTERM, as the kubelet sends it: the service drains and exits by itself."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


NGINX_CONF = """\
worker_processes 1;
{user}
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    log_format upstreams '$status $request_method $request_uri up=$upstream_addr up_status=$upstream_status '
                         't=$request_time';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # Request bodies stay in memory (no temp files), up to the service's own body limit.
    client_max_body_size 2m;
    client_body_buffer_size 2m;
    # No keep-alive towards the load generator: the tests reload nginx to change upstreams (their stand-in
    # for endpoint updates), and a reload closes idle client connections, racing a client that is just
    # reusing one. That race is between the client and this proxy, not the service under test. Keep-alive
    # towards the servers stays on: closing those is the servers' part of draining.
    keepalive_timeout 0;

    upstream inference {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://inference;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
            # A draining or starting server answers 503 without doing the work, and a closed port or a
            # keep-alive connection closed under the request is an `error`: retry those on the next
            # server. `non_idempotent` extends that to POST, which is safe because inference has no side
            # effects. 429 (shedding) and 504 (deadline) are answers, not retried.
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_next_upstream_timeout 10s;
        }}
    }}
}}
"""


class Nginx:
    """nginx in the foreground with its config and logs in a temporary folder; reload swaps upstreams."""

    def __init__(self, workdir: Path, upstream_ports: list[int], port: int | None = None) -> None:
        self.binary = require_tool("nginx", "/usr/sbin")
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.conf = self.dir / "nginx.conf"
        self._write_conf(upstream_ports)
        self._log = (self.dir / "stderr.log").open("wb")
        check = subprocess.run(
            [self.binary, "-t", "-p", str(self.dir), "-c", str(self.conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{check.stderr}")
        self.process = subprocess.Popen(
            [self.binary, "-p", str(self.dir), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_listening()

    def _write_conf(self, upstream_ports: list[int]) -> None:
        # max_fails=0: never take a server out on its own; readiness is what the reloads express.
        servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
        # As root, nginx's workers would switch to `nobody`, who cannot write into a private tmp folder.
        user = "user root;" if os.geteuid() == 0 else ""
        self.conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, servers=servers, user=user))

    def _wait_listening(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.dir / 'error.log').read_text(errors='replace')}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.1)
        raise TimeoutError("nginx did not open its port")

    def set_upstreams(self, ports: list[int]) -> None:
        """Rewrites the upstream list and reloads (SIGHUP): old workers finish their requests first."""
        before = self._worker_pids()
        self._write_conf(ports)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:  # reloaded once a worker of the new configuration runs
            if self._worker_pids() - before:
                return
            time.sleep(0.05)
        raise TimeoutError(f"nginx did not reload: {(self.dir / 'error.log').read_text(errors='replace')}")

    def _worker_pids(self) -> set[int]:
        children = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis.
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.process.pid:
                    children.add(int(stat.parent.name))
        return children

    def access_log(self) -> list[str]:
        path = self.dir / "access.log"
        return path.read_text().splitlines() if path.is_file() else []

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()

    def __enter__(self) -> Nginx:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
