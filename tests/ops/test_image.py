"""The runtime image, really built and run: podman builds the Dockerfile's `runtime` target on a Debian base
bootstrapped here (no image registry is reachable), with the default model store built on the host; the
container runs as in k8s (non-root, read-only root filesystem, no capabilities) and answers the three
endpoints. Prints the image size and the time to build and to ready."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.server import free_port
from tests.ops.tools import REPO, require_tool

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE = "localhost/debian-python:bookworm"
IMAGE = "localhost/storefront-inference:test"
MIRROR = "http://deb.debian.org/debian"
# The host's CA bundle, at a path the image's own ca-certificates package does not replace (pip needs it).
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
READY_TIMEOUT_S = 120.0


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    # runc: crun fails on these machines (cgroups in hybrid mode); see ../shared/STACK.md "Containers".
    command = [require_tool("podman", "/usr/bin"), "--runtime", "runc", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def ensure_base_image() -> None:
    """A minimal Debian bookworm with python3 (python-is-python3 for `python`), imported as BASE."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return
    debootstrap = require_tool("debootstrap", "/usr/sbin")
    with tempfile.TemporaryDirectory() as rootfs:
        packages = "python3,python3-venv,python-is-python3,ca-certificates"
        subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={packages}", "bookworm", rootfs, MIRROR],
            check=True,
            capture_output=True,
            timeout=900,
        )
        tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [require_tool("podman", "/usr/bin"), "import", "-", BASE],
            stdin=tar.stdout,
            check=True,
            timeout=600,
        )
        assert tar.wait() == 0


def build(target: str, tag: str, *options: str) -> None:
    """`podman build --target target` on BASE; pip reaches PyPI with the host's CA bundle."""
    podman(
        "build",
        "--network",
        "host",
        "--volume",
        f"{HOST_CA}:/run/host-ca.crt:ro",
        "--build-arg",
        f"PYTHON_IMAGE={BASE}",
        "--build-arg",
        "PIP_CERT=/run/host-ca.crt",
        *options,
        "--target",
        target,
        "-t",
        tag,
        str(REPO),
        timeout=1800,
    )


@pytest.fixture(scope="module")
def image() -> Iterator[dict[str, float]]:
    missing = [
        n
        for n in ("review-sentiment", "product-embedder", "product-recommender", "product-reranker")
        if not any((REPO / "model_store" / n).glob("*/"))
    ]
    if missing:
        pytest.fail(f"model_store/ has no {', '.join(missing)}: build it with `make store` (make test does)")
    started = time.monotonic()
    ensure_base_image()
    base_s = time.monotonic() - started
    started = time.monotonic()
    build("runtime", IMAGE, "--build-arg", "STORE_FROM=prebuilt-store", "--build-arg", "VARIANT=cpu")
    figures = {"base_s": base_s, "build_s": time.monotonic() - started}
    figures["size_mb"] = int(podman("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout) / 1e6
    yield figures
    podman("rmi", "-f", IMAGE, check=False)


@pytest.fixture(scope="module")
def container(image: dict[str, float]) -> Iterator[tuple[str, str, dict[str, float]]]:
    port = free_port()
    name = f"storefront-test-{os.getpid()}"
    started = time.monotonic()
    podman(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        "10001:10001",
        "-e",
        "INFERENCE_HOST=127.0.0.1",
        "-e",
        f"INFERENCE_PORT={port}",
        IMAGE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        else:
            raise AssertionError("not ready:\n" + podman("logs", name, check=False).stderr[-3000:])
        image["ready_s"] = time.monotonic() - started
        print(
            f"\nimage {IMAGE}: {image['size_mb']:.0f} MB; base bootstrapped in {image['base_s']:.0f} s, "
            f"built in {image['build_s']:.0f} s, ready {image['ready_s']:.1f} s after `podman run`"
        )
        yield name, url, image
    finally:
        podman("rm", "-f", name, check=False)


def test_the_image_serves_the_three_endpoints(container: tuple[str, str, dict[str, float]]) -> None:
    _, url, _ = container
    sentiment = httpx.post(
        url + "/v1/sentiment", json={"texts": ["Battery died after two days."]}, timeout=30
    )
    assert sentiment.status_code == 200, sentiment.text
    assert sentiment.json()["results"][0]["label"] == "negative"
    candidates = [
        {"id": "buds", "text": "Bluetooth in-ear earbuds with charging case"},
        {"id": "knife", "text": "Stainless steel chef knife, 8 inch"},
    ]
    rank = httpx.post(
        url + "/v1/rank", json={"query": "wireless earbuds", "candidates": candidates}, timeout=30
    )
    assert rank.status_code == 200, rank.text
    assert rank.json()["results"][0]["id"] == "buds"
    history = [{"id": "case", "text": "Hard shell carrying case for headphones"}]
    recommend = httpx.post(
        url + "/v1/recommend", json={"history": history, "candidates": candidates}, timeout=30
    )
    assert recommend.status_code == 200, recommend.text
    assert {r["id"] for r in recommend.json()["results"]} == {"buds", "knife"}


def test_the_container_runs_hardened_without_the_conversion_toolchain(
    container: tuple[str, str, dict[str, float]],
) -> None:
    name, _, _ = container
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    assert podman("exec", name, "touch", "/srv/written", check=False).returncode != 0  # read-only root
    modules = "('torch', 'transformers', 'onnxruntime')"
    script = f"import importlib.util as u; print([m for m in {modules} if u.find_spec(m)])"
    assert podman("exec", name, "python", "-c", script).stdout.strip() == "['onnxruntime']"
    caps = podman("exec", name, "grep", "CapEff", "/proc/self/status").stdout.split()
    assert caps[-1] == "0000000000000000"


def test_the_store_stage_installs_the_conversion_toolchain(image: dict[str, float]) -> None:
    """The `store` stage's install step (torch from the local CPU wheel, `.[convert]`, recbole) on the same
    base; building the store itself needs ../shared/data as a build context, which podman 4.3 lacks."""
    wheels = Path("/opt/wheels")
    if not any(wheels.glob("torch-2.13.0*.whl")):
        pytest.fail(f"no torch 2.13.0 CPU wheel in {wheels}: the store stage cannot install torch here")
    tag = "localhost/storefront-store-deps:test"
    started = time.monotonic()
    build(
        "store-deps",
        tag,
        "--volume",
        f"{wheels}:/opt/torch-wheels:ro",
        "--build-arg",
        "TORCH_WHEELS=/opt/torch-wheels",
    )
    try:
        script = (
            "import torch, transformers, optimum.exporters.onnx, conversion.cli; print(torch.__version__)"
        )
        version = podman("run", "--rm", "--network", "host", tag, "python", "-c", script).stdout.strip()
        assert version.startswith("2.13.0"), version
        print(f"\nstore stage install step: {time.monotonic() - started:.0f} s")
    finally:
        podman("rmi", "-f", tag, check=False)
