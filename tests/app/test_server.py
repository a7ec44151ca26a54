"""Integration tests: a real uvicorn process on 127.0.0.1 serving the tiny store built by conversion/."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.server import REPO, Server, metric_value, run_server

pytestmark = pytest.mark.integration

TOKEN = "integration-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN_TOKEN = "integration-admin-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CANDIDATES = [{"id": f"sku-{i}", "text": f"product {i} with a great case and good sound"} for i in range(12)]
REVIEWS = ["great sound", "the battery died after two days", "love it, very good", "not good at all"]


def flip_byte(path: Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # One session per model makes concurrent requests queue behind each other, so batches form.
    with run_server(
        tiny_store,
        tmp_path_factory.mktemp("logs"),
        api_token=TOKEN,
        admin_token=ADMIN_TOKEN,
        sessions_per_model=1,
        max_wait_ms=5,
        max_body_bytes=65536,
    ) as s:
        yield s


def test_every_endpoint(server: Server) -> None:
    with server.client(headers=AUTH) as c:
        assert c.get("/livez").json()["status"] == "alive"
        assert c.get("/readyz").status_code == 200
        sentiment = c.post("/v1/sentiment", json={"texts": REVIEWS})
        assert sentiment.status_code == 200
        assert sentiment.json()["model"] == "review-sentiment"
        assert len(sentiment.json()["results"]) == 4
        rank = c.post("/v1/rank", json={"query": "earbuds", "candidates": CANDIDATES, "top_k": 5}).json()
        assert rank["model"] == "product-embedder"
        assert len(rank["results"]) == 5
        cross = c.post(
            "/v1/rank", json={"query": "earbuds", "candidates": CANDIDATES, "model": "product-reranker"}
        )
        assert cross.json()["model"] == "product-reranker"
        rec = c.post("/v1/recommend", json={"history": CANDIDATES[:3], "candidates": CANDIDATES[3:]}).json()
        assert len(rec["results"]) == 9
        assert (rec["model"], rec["version"]) == ("product-recommender", "1")
        models = c.get("/v1/models").json()
        assert {m["name"] for m in models["models"]} == {
            "review-sentiment",
            "product-embedder",
            "product-recommender",
            "product-reranker",
        }
        assert c.post("/v1/models/reload").status_code == 401  # the API token is not the admin's
        assert c.post("/v1/models/reload", headers=ADMIN).json()["changed"] == []
        assert "inference_ready 1.0" in c.get("/metrics").text
    assert "great sound" not in server.log()  # no payloads in logs by default


def test_errors_over_http(server: Server) -> None:
    with server.client(headers=AUTH) as c:
        assert (
            c.post(
                "/v1/sentiment", json={"texts": ["a"]}, headers={"Authorization": "Bearer wrong"}
            ).status_code
            == 401
        )
        big = c.post("/v1/sentiment", json={"texts": ["x" * 70000]})
        assert big.status_code == 413
        assert big.json()["error"]["type"] == "body_too_large"
        bad = c.post("/v1/sentiment", content=b'{"texts": [', headers={"content-type": "application/json"})
        assert bad.status_code == 422
        wrong_type = c.post("/v1/sentiment", json={"texts": "not a list"})
        assert wrong_type.status_code == 422
        assert wrong_type.json()["error"]["message"].startswith("texts: ")
        assert c.post("/v1/sentiment", json={"texts": ["a"], "model": "unknown"}).status_code == 404
        assert c.get("/no/such/path").json()["error"]["type"] == "not_found"
    samples = server.metrics()
    assert metric_value(samples, "inference_rejected_requests_total", reason="body_too_large") >= 1
    assert metric_value(samples, "inference_rejected_requests_total", reason="unauthorized") >= 1


async def _concurrent_sentiment(base_url: str, clients: int, rounds: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(base_url=base_url, headers=AUTH, timeout=30.0) as c:

        async def one(i: int) -> None:
            for r in range(rounds):
                resp = await c.post("/v1/sentiment", json={"texts": [REVIEWS[(i + r) % 4] + f" {i}"]})
                statuses[resp.status_code] += 1

        await asyncio.gather(*(one(i) for i in range(clients)))
    return statuses


def test_concurrent_requests_share_batches(server: Server) -> None:
    before = server.metrics()
    statuses = asyncio.run(_concurrent_sentiment(server.base_url, clients=32, rounds=5))
    assert statuses == Counter({200: 160})
    after = server.metrics()
    labels = {"model": "review-sentiment"}
    runs = metric_value(after, "inference_batch_size_count", **labels) - metric_value(
        before, "inference_batch_size_count", **labels
    )
    texts = metric_value(after, "inference_batch_size_sum", **labels) - metric_value(
        before, "inference_batch_size_sum", **labels
    )
    assert texts == 160
    assert runs < texts, "every run held a single text: no batching happened"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(server: Server, tmp_path: Path) -> None:
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{server.base_url}/openapi.json",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples",
        "15",
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "1",
        # One worker: with two, Hypothesis describes the filter lambdas of path parameters (/v2/models/{name})
        # with ast.parse in both threads at once, which CPython 3.11 fails with a SystemError.
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--header",
        f"Authorization: Bearer {TOKEN}",
        "--no-color",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_queue_capacity_and_deadline_are_exact(tiny_store: Path, tmp_path: Path) -> None:
    # A deadline of 1 µs has always passed when a worker looks: every admitted request is a 504, dropped
    # before inference. Admission is decided first, by queue capacity (8 texts): bigger requests get 429.
    with run_server(
        tiny_store, tmp_path, queue_capacity=8, max_texts_per_request=16, request_timeout_s=0.000001
    ) as s:
        sizes = [3, 8, 9, 16, 1, 12, 8]
        with s.client() as c:
            responses = [c.post("/v1/sentiment", json={"texts": ["good"] * n}) for n in sizes]
        assert [r.status_code for r in responses] == [504, 504, 429, 429, 504, 429, 504]
        for r in responses:
            if r.status_code == 429:
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["type"] == "queue_full"
            else:
                assert r.json()["error"]["type"] == "deadline_exceeded"
        samples = s.metrics()
        assert metric_value(samples, "inference_rejected_requests_total", reason="queue_full") == 3
        assert metric_value(samples, "inference_rejected_requests_total", reason="deadline") == 4
        assert metric_value(samples, "inference_batch_size_count", model="review-sentiment") == 0


async def _load_until_refused(
    base_url: str, clients: int, stop_after_s: float
) -> tuple[Counter[str], list[str]]:
    """Each client sends requests until it is refused (503 or connection refused) or time runs out."""
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    end = time.monotonic() + stop_after_s
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as c:

        async def one(i: int) -> None:
            while time.monotonic() < end:
                try:
                    r = await c.post(
                        "/v1/sentiment", json={"texts": [f"{REVIEWS[i % 4]} {j}" for j in range(4)]}
                    )
                except httpx.ConnectError:
                    outcomes["connect_refused"] += 1
                    return
                except httpx.HTTPError as exc:
                    failures.append(f"transport: {type(exc).__name__}: {exc}")
                    return
                if r.status_code == 200:
                    outcomes["ok"] += 1
                    continue
                if r.status_code == 503 and r.json()["error"]["type"] == "draining":
                    outcomes["draining"] += 1
                    return
                failures.append(f"{r.status_code}: {r.text}")
                return

        await asyncio.gather(*(one(i) for i in range(clients)))
    return outcomes, failures


def test_sigterm_during_load_fails_no_admitted_request(tiny_store: Path, tmp_path: Path) -> None:
    with run_server(tiny_store, tmp_path, drain_timeout_s=10) as s:

        async def scenario() -> tuple[Counter[str], list[str], int]:
            load = asyncio.create_task(_load_until_refused(s.base_url, clients=16, stop_after_s=30))
            await asyncio.sleep(1.0)
            s.proc.send_signal(15)
            await asyncio.sleep(0.05)
            async with httpx.AsyncClient(base_url=s.base_url, timeout=5.0) as c:
                ready = (await c.get("/readyz")).status_code
            outcomes, failures = await load
            return outcomes, failures, ready

        started = time.monotonic()
        outcomes, failures, ready_after_term = asyncio.run(scenario())
        code = s.proc.wait(30)
        took = time.monotonic() - started
    assert failures == []
    assert outcomes["ok"] > 0
    assert outcomes["draining"] + outcomes["connect_refused"] == 16
    assert ready_after_term == 503
    assert code in (0, -15)
    assert took < 10 + 15
    assert "drained; shutting down" in s.log()


async def _mixed_load(base_url: str, stop: asyncio.Event) -> tuple[list[str], Counter[str]]:
    """Rank, recommend and sentiment requests until `stop`; returns failures and versions that answered."""
    failures: list[str] = []
    versions: Counter[str] = Counter()
    bodies = [
        ("/v1/rank", {"query": "good case", "candidates": CANDIDATES}),
        ("/v1/recommend", {"history": CANDIDATES[:2], "candidates": CANDIDATES[2:]}),
        ("/v1/sentiment", {"texts": REVIEWS}),
    ]
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as c:

        async def one(i: int) -> None:
            n = 0
            while not stop.is_set() and n < 2000:
                path, body = bodies[(i + n) % 3]
                n += 1
                try:
                    r = await c.post(path, json=body)
                except httpx.HTTPError as exc:
                    failures.append(f"{path}: {type(exc).__name__}")
                    continue
                if r.status_code != 200:
                    failures.append(f"{path}: {r.status_code} {r.text}")
                else:
                    data = r.json()
                    versions[f"{data['model']}/{data['version']}"] += 1

        await asyncio.gather(*(one(i) for i in range(6)))
    return failures, versions


def _publish_copy(store: Path, name: str, version: str) -> Path:
    """Publish a copy of `name/version` as the next version, with the conversion pipeline's publisher."""
    from conversion.publish import publish_version

    source = store / name / version
    manifest: dict[str, Any] = json.loads((source / "manifest.json").read_text())
    files = {f: source / f for f in manifest.pop("files")}
    manifest.pop("version")
    return publish_version(store, name, files, manifest)


def _publish_inconsistent(store: Path, name: str, version: str) -> Path:
    """Publish a copy of `name/version` whose manifest claims a max sequence length of 4,096 tokens: above
    the default INFERENCE_MAX_BATCH_TOKENS (2,048), so no batch could hold one long text."""
    from conversion.publish import publish_version

    source = store / name / version
    manifest: dict[str, Any] = json.loads((source / "manifest.json").read_text())
    files = {f: source / f for f in manifest.pop("files")}
    manifest.pop("version")
    return publish_version(store, name, files, {**manifest, "max_sequence_length": 4096})


def test_broken_and_inconsistent_versions_never_stop_serving(tiny_store: Path, tmp_path: Path) -> None:
    """Startup with a corrupt v2 and an inconsistent v3 beside a good v1 serves v1; a reload refuses a new
    inconsistent version while another model rolls out; polling does not retry refused versions."""
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    flip_byte(_publish_copy(store, "review-sentiment", "1") / "model.onnx")
    _publish_inconsistent(store, "review-sentiment", "1")
    (store / "review-sentiment" / "latest").mkdir()  # not a version number: ignored with a warning
    settings = {"admin_token": ADMIN_TOKEN, "reload_poll_s": 0.2}
    with run_server(store, tmp_path, **settings) as s, s.client() as c:
        listing = c.get("/v1/models").json()
        served = {m["name"]: m["version"] for m in listing["models"]}
        assert served["review-sentiment"] == "1"
        refused = {
            (f["version"], f["reason"]) for f in listing["failures"] if f["name"] == "review-sentiment"
        }
        assert refused == {("2", "checksum"), ("3", "settings")}
        assert c.post("/v1/sentiment", json={"texts": REVIEWS}).json()["version"] == "1"

        _publish_inconsistent(store, "review-sentiment", "1")  # v4
        _publish_copy(store, "product-embedder", "1")  # v2
        reload = c.post("/v1/models/reload", headers=ADMIN).json()
        # The 0.2 s poll may have loaded product-embedder/2 (and tried v4) before this explicit reload.
        assert set(reload["changed"]) <= {"product-embedder/2"}
        served = {m["name"]: m["version"] for m in c.get("/v1/models").json()["models"]}
        assert served["product-embedder"] == "2"
        assert ("review-sentiment", "4", "settings") in {
            (f["name"], f["version"], f["reason"]) for f in reload["failures"]
        }

        def refusals() -> list[float]:
            samples = s.metrics()
            name = "inference_model_load_failures_total"
            return [metric_value(samples, name, name="review-sentiment", version=v) for v in ("2", "3", "4")]

        # Startup tried 2 and 3, the explicit reload retried them and tried 4 (a second time if a poll
        # had tried it first).
        after_reload = refusals()
        assert after_reload[:2] == [2, 2]
        assert after_reload[2] in (1, 2)
        time.sleep(1.5)  # several polls
        assert refusals() == after_reload  # polling retries no refused version
        assert c.post("/v1/sentiment", json={"texts": REVIEWS}).json()["version"] == "1"
        assert c.post("/v1/rank", json={"query": "q", "candidates": CANDIDATES}).json()["version"] == "2"
    log = s.log()
    assert log.count("ignoring") == 1
    assert "its name is not a version number" in log


def test_corrupt_artifact_refused_and_versions_roll_in_under_load(tiny_store: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(tiny_store, store)
    flip_byte(store / "product-reranker" / "1" / "model.onnx")
    with run_server(store, tmp_path, admin_token=ADMIN_TOKEN) as s, s.client() as c:
        listing = c.get("/v1/models").json()
        assert {m["name"] for m in listing["models"]} == {
            "review-sentiment",
            "product-embedder",
            "product-recommender",
        }
        assert [(f["name"], f["version"], f["reason"]) for f in listing["failures"]] == [
            ("product-reranker", "1", "checksum")
        ]
        assert (
            c.post(
                "/v1/rank", json={"query": "q", "candidates": CANDIDATES, "model": "product-reranker"}
            ).status_code
            == 404
        )
        assert c.post("/v1/sentiment", json={"texts": REVIEWS}).status_code == 200
        assert metric_value(s.metrics(), "inference_model_load_failures_total", name="product-reranker") == 1

        async def rollout() -> tuple[list[str], Counter[str], list[str], list[str]]:
            stop = asyncio.Event()
            load = asyncio.create_task(_mixed_load(s.base_url, stop))
            await asyncio.sleep(0.5)
            _publish_copy(store, "product-embedder", "1")
            broken = _publish_copy(store, "review-sentiment", "1")
            flip_byte(broken / "model.onnx")
            async with httpx.AsyncClient(base_url=s.base_url, timeout=60.0, headers=ADMIN) as admin:
                reload = (await admin.post("/v1/models/reload")).json()
            await asyncio.sleep(0.5)
            stop.set()
            failures, versions = await load
            return (
                failures,
                versions,
                reload["changed"],
                [f"{f['name']}/{f['version']}" for f in reload["failures"]],
            )

        failures, versions, changed, refused = asyncio.run(rollout())
        assert failures == []
        assert changed == ["product-embedder/2"]
        assert "review-sentiment/2" in refused
        assert versions["product-embedder/1"] > 0
        assert versions["product-embedder/2"] > 0
        assert versions["review-sentiment/1"] > 0
        assert "review-sentiment/2" not in versions
        served = {m["name"]: m["version"] for m in c.get("/v1/models").json()["models"]}
        assert served == {"review-sentiment": "1", "product-embedder": "2", "product-recommender": "1"}
        samples = s.metrics()
        assert (
            metric_value(samples, "inference_model_load_failures_total", name="review-sentiment", version="2")
            == 1
        )
        assert metric_value(samples, "inference_model_info", name="product-embedder", version="2") == 1
        assert metric_value(samples, "inference_model_info", name="product-embedder", version="1") == 0


@pytest.mark.slow
def test_real_default_models(tmp_path: Path) -> None:
    store = REPO / "model_store"
    missing = [
        n
        for n in ("review-sentiment", "product-embedder", "product-recommender", "product-reranker")
        if not any((store / n).glob("*/manifest.json"))
    ]
    if missing:
        pytest.skip(f"model_store/ has no {', '.join(missing)} yet: build it with `make store`")
    with run_server(store, tmp_path) as s, s.client() as c:
        sentiment = c.post(
            "/v1/sentiment",
            json={
                "texts": [
                    "Absolutely love it, works perfectly.",
                    "Terrible. Broke after one day, waste of money.",
                ]
            },
        ).json()
        assert [r["label"] for r in sentiment["results"]] == ["positive", "negative"]
        served = {m["name"]: m for m in c.get("/v1/models").json()["models"]}["review-sentiment"]
        assert served["teacher"] == "checkpoints/review-sentiment-teacher"
        deltas = served["quality_delta_vs_teacher"]["deltas"]
        assert set(deltas) == {"sst2_validation", "uci_amazon", "uci_yelp", "amazon_multidomain_validation"}
        assert min(deltas.values()) >= -1.0
        assert served["speedup_vs_teacher"]["batch1_seq64"] > 1.0
        rank = c.post(
            "/v1/rank",
            json={
                "query": "wireless earbuds",
                "candidates": [
                    {"id": "knife", "text": "Stainless steel chef knife, 8 inch"},
                    {"id": "buds", "text": "Bluetooth in-ear earbuds with charging case"},
                    {"id": "mug", "text": "Ceramic coffee mug, 350 ml"},
                ],
            },
        ).json()
        assert rank["results"][0]["id"] == "buds"
        assert [(st["model"], st["candidates"]) for st in rank["stages"]] == [
            ("product-embedder", 3),
            ("product-reranker", 3),
        ]
        reranker = {m["name"]: m for m in c.get("/v1/models").json()["models"]}["product-reranker"]
        passed = {(m["dataset"], m["metric"]) for m in reranker["validation"]["metrics"] if m["passed"]}
        assert {
            ("homedepot-rerank", "ndcg@10_vs_bm25"),
            ("homedepot-rerank", "ndcg@10_vs_untuned-minilm"),
            ("homedepot-catalog", "ndcg@10_vs_first_stage"),
        } <= passed
        history = [
            {"id": "pens", "text": "Pilot G2 retractable gel pens, fine point, black ink, 12 pack"},
            {"id": "notes", "text": "Post-it Notes, 3 x 3 in, canary yellow, 12 pads"},
        ]
        candidates = [
            {"id": "shoes", "text": "Men's trail running shoes, waterproof"},
            {"id": "stapler", "text": "Swingline desktop stapler with 1000 staples"},
            {"id": "notes", "text": "Post-it Notes, 3 x 3 in, canary yellow, 12 pads"},
        ]
        recommend = c.post("/v1/recommend", json={"history": history, "candidates": candidates}).json()
        assert recommend["model"] == "product-recommender"
        assert [r["id"] for r in recommend["results"]] == ["stapler", "shoes"]
        assert recommend["excluded"] == ["notes"]
        gate = {m["name"]: m for m in c.get("/v1/models").json()["models"]}["product-recommender"][
            "validation"
        ]
        beaten = {
            (m["dataset"], m["metric"]) for m in gate["metrics"] if "_vs_" in m["metric"] and m["passed"]
        }
        assert {
            ("amazon-office/sampled", "hr@10_vs_popularity"),
            ("amazon-office/sampled", "hr@10_vs_co-occurrence"),
            ("movielens-100k/sampled", "hr@10_vs_untuned-content"),
        } <= beaten
        # A client that gives up: its queued texts never reach the model.
        texts = [f"item {i}: " + "a long product description with many words " * 10 for i in range(200)]
        gone = {"query": "gone", "candidates": [{"id": str(i), "text": t} for i, t in enumerate(texts)]}
        before = s.metrics()
        with pytest.raises(httpx.TimeoutException):
            c.post(
                "/v1/rank",
                json=gone,
                timeout=0.1,
            )
        time.sleep(2.0)
        after = s.metrics()
        batch_sum = "inference_batch_size_sum"
        ran = metric_value(after, batch_sum) - metric_value(before, batch_sum)
        assert ran < 201
        assert metric_value(after, "inference_rejected_requests_total", reason="client_disconnected") == 1
