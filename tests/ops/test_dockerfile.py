"""The Dockerfile passes hadolint and keeps the promises the Deployment relies on.

No Docker engine runs here, so the image is never built in the test suite: these are static checks.
"""

from __future__ import annotations

import json
import re
import subprocess

from tests.ops.tools import REPO, require_tool

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for instruction, args in _instructions():
        if instruction == "FROM":
            name = args.split(" AS ")[-1].strip() if " AS " in args else args
            current = stages.setdefault(name, [])
        elif current is not None:
            current.append((instruction, args))
    return stages


def test_hadolint_finds_nothing() -> None:
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile() -> None:
    """The lint gate is real: a shell-form CMD running as root is reported."""
    hadolint = require_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", "-"],
        input="FROM python:3.11-slim\nRUN pip install fastapi\nCMD uvicorn app:app\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "DL3025" in result.stdout  # JSON (exec) form for CMD


def test_runtime_stage_is_lean_non_root_and_signal_safe() -> None:
    stages = _stages()
    assert {"store", "base-cpu", "base-gpu", "runtime"} <= stages.keys()
    runtime = stages["runtime"]
    runs = " ".join(args for instruction, args in runtime if instruction == "RUN")
    # Serving dependencies only: the project without extras; torch never enters the runtime image.
    assert re.search(r"pip install \.(\s|$)", runs)
    assert "torch" not in runs
    assert "[convert]" not in runs
    # The model store comes from the build stage.
    assert any(i == "COPY" and args.startswith("--from=chosen-store") for i, args in runtime)
    # chosen-store is `store` (built in the image) unless STORE_FROM=prebuilt-store (model_store/ as is)
    assert {"store", "prebuilt-store", "chosen-store"} <= _stages().keys()
    assert ("FROM", "${STORE_FROM} AS chosen-store") in _instructions()
    assert ("ARG", "STORE_FROM=store") in _instructions()

    users = [args for instruction, args in runtime if instruction == "USER"]
    assert users
    assert users[-1].split(":")[0] not in {"root", "0"}

    cmd = [args for instruction, args in runtime if instruction == "CMD"][-1]
    argv = json.loads(cmd)  # exec form: the server is PID 1 and gets SIGTERM itself
    assert argv == ["python", "-m", "app"]
    env = " ".join(args for instruction, args in runtime if instruction == "ENV")
    assert "INFERENCE_HOST=0.0.0.0" in env

    healthcheck = [args for instruction, args in runtime if instruction == "HEALTHCHECK"][-1]
    assert "/readyz" in healthcheck or "/livez" in healthcheck


def test_gpu_variant_uses_cuda_provider_and_onnxruntime_gpu() -> None:
    stages = _stages()
    gpu_env = " ".join(args for instruction, args in stages["base-gpu"] if instruction == "ENV")
    assert "INFERENCE_PROVIDER=cuda" in gpu_env
    runtime_runs = " ".join(args for instruction, args in stages["runtime"] if instruction == "RUN")
    assert "onnxruntime-gpu" in runtime_runs


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**"  # deny by default, then allow what the build needs
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "app", "conversion", "model_store"}
