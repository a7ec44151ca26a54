"""Start one server process on 127.0.0.1, wait until it is ready, stop it; one at a time."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.paths import REPO_ROOT


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


SERVICE_FACTORY = "app.main:create_app"


def server_command(factory: str, port: int) -> tuple[list[str], dict[str, str]]:
    """Command and extra environment of a server on 127.0.0.1:`port`. The service starts as `make run` and
    the image start it (`python -m app`: its own HTTP protocol, access log off); the baseline is plain
    uvicorn with its access log off too."""
    if factory == SERVICE_FACTORY:
        return [sys.executable, "-m", "app"], {"INFERENCE_HOST": "127.0.0.1", "INFERENCE_PORT": str(port)}
    argv = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1", "--port", str(port)]
    return [*argv, "--no-access-log", "--log-level", "warning"], {}


BASELINE_FACTORY = "bench.baseline_server:create_app"


@dataclass
class Server:
    """A running server process and when it became ready."""

    process: subprocess.Popen[bytes]
    port: int
    ready_s: float
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class ServerFailed(RuntimeError):
    """The server exited or did not become ready; the message carries the end of its log."""


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start_server(
    factory: str, env: dict[str, str], log_path: Path, *, ready_timeout_s: float = 180.0
) -> Server:
    port = free_port()
    argv, server_env = server_command(factory, port)
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **env, **server_env}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = log_path.open("wb")
    started = time.perf_counter()
    process = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = started + ready_timeout_s
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise ServerFailed(f"{factory} exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            status, _ = http_get(port, "/readyz", timeout=2.0)
            if status == 200:
                return Server(process, port, time.perf_counter() - started, log_path)
        except OSError:
            pass
        time.sleep(0.1)
    stop_server_process(process)
    raise ServerFailed(f"{factory} not ready within {ready_timeout_s:.0f}s:\n{_tail(log_path)}")


def wait_idle(port: int, *, max_s: float = 90.0, quick_s: float = 0.05) -> float:
    """Wait until the server answers /readyz at once twice in a row (its backlog from the last cell is
    done: the baseline keeps computing requests whose clients gave up); returns the seconds waited."""
    start = time.perf_counter()
    fast = 0
    while fast < 2 and time.perf_counter() - start < max_s:
        t0 = time.perf_counter()
        try:
            http_get(port, "/readyz", timeout=max_s)
        except OSError:
            time.sleep(0.2)
            continue
        fast = fast + 1 if time.perf_counter() - t0 < quick_s else 0
        time.sleep(0.05)
    return time.perf_counter() - start


def stop_server_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def stop_server(server: Server) -> None:
    stop_server_process(server.process)
