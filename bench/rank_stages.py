"""Search-page ranking: quality and latency of /v1/rank's modes on the default store, measured side by side.

    .venv/bin/python -m bench.rank_stages                 # ~5 min on 2 cores
    .venv/bin/python -m bench.rank_stages --queries 40 --duration 5 --depths 20   # smoke run

Each request is a real Home Depot validation query with 100 candidates: its judged titles and other
validation titles (irrelevant for it), best 10 asked. Modes: the bi-encoder alone (`rerank_top_n: 0`),
two-stage with each of `--depths` (the bi-encoder's best N re-scored by the cross-encoder), and the reranker
alone (`model: product-reranker`, every pair). Per mode: NDCG@10 of the answers against the judgements and
the latency of a sequential pass (concurrency 1, each of `--queries` pages once), then a closed loop at
concurrency 8 cycling through pages of every validation query (1,047: a fast mode sees a query again after
that many requests, and then its embedding is cached).

Cache: `warm` embeds every validation title first (a catalog's titles recur across searches; each query
is still new), `cold` runs a second server with INFERENCE_CACHE_SIZE=0, so every candidate is embedded in
every request. Targets (issue 13): two-stage at the default depth, warm, p50 <= 40 ms at concurrency 1 and
p99 <= 250 ms at concurrency 8. Writes bench_results/rank-stages-<time>.json and rank-stages-latest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.loadgen import run_load, use_uvloop
from bench.machine import describe, headline
from bench.paths import RESULTS_DIR
from bench.payloads import Payload
from bench.servers import SERVICE_FACTORY, Server, start_server, stop_server, wait_idle
from bench.stats import percentile
from conversion.data.homedepot import load_homedepot
from conversion.relevance import RelevanceSet

CANDIDATES = 100
TOP_K = 10
TARGET_P50_C1_MS = 40.0
TARGET_P99_C8_MS = 250.0


@dataclass(frozen=True)
class SearchPage:
    query: str
    candidates: list[str]
    gains: list[float]  # per candidate: relevance - 1 when judged for this query, else 0


@dataclass
class Cell:
    mode: str
    cache: str
    ndcg_at_10: float
    c1_p50_ms: float
    c1_p99_ms: float
    c8_p50_ms: float
    c8_p99_ms: float
    c8_requests_per_s: float
    errors: int
    stages: list[dict[str, Any]]


def search_pages(queries: int, seed: int) -> tuple[list[SearchPage], list[str]]:
    """`queries` validation queries (seeded sample), each with its judged titles filled up to CANDIDATES with
    other validation titles; and every validation title (what a warm cache holds)."""
    data = RelevanceSet.from_judgements(load_homedepot("validation"))
    rng = random.Random(seed)
    pages: list[SearchPage] = []
    for q in rng.sample(range(len(data.queries)), min(queries, len(data.queries))):
        judged = dict(zip(data.judged[q].tolist(), data.gains[q].tolist(), strict=True))
        others = [i for i in rng.sample(range(len(data.catalog)), CANDIDATES * 2) if i not in judged]
        chosen = (list(judged) + others)[:CANDIDATES]
        rng.shuffle(chosen)
        pages.append(
            SearchPage(
                data.queries[q], [data.catalog[i] for i in chosen], [judged.get(i, 0.0) for i in chosen]
            )
        )
    return pages, data.catalog


def body(page: SearchPage, mode: dict[str, Any]) -> bytes:
    candidates = [{"id": str(i), "text": t} for i, t in enumerate(page.candidates)]
    return orjson.dumps({"query": page.query, "candidates": candidates, "top_k": TOP_K, **mode})


def ndcg_at_10(page: SearchPage, ranked_ids: list[int]) -> float:
    from sklearn.metrics import ndcg_score

    if max(page.gains) <= 0:
        return 0.0
    position = {c: len(ranked_ids) - r for r, c in enumerate(ranked_ids)}
    scores = [float(position.get(i, -1)) for i in range(len(page.candidates))]
    return float(ndcg_score([page.gains], [scores], k=TOP_K))


def sequential_pass(
    server: Server, pages: list[SearchPage], mode: dict[str, Any]
) -> tuple[list[float], list[float], list[dict[str, Any]]]:
    """Every page once, one at a time on one keep-alive connection: latencies (s), NDCG@10, the stages."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    latencies: list[float] = []
    quality: list[float] = []
    stages: list[dict[str, Any]] = []
    try:
        for page in pages:
            payload = body(page, mode)
            started = time.perf_counter()
            connection.request("POST", "/v1/rank", payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            latencies.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"/v1/rank answered {response.status}: {answer[:300]!r}")
            content = orjson.loads(answer)
            quality.append(ndcg_at_10(page, [int(r["id"]) for r in content["results"]]))
            stages = content["stages"]
    finally:
        connection.close()
    return latencies, quality, stages


def warm_cache(server: Server, titles: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        for start in range(0, len(titles), 256):
            payload = orjson.dumps({"model": "product-embedder", "input": titles[start : start + 256]})
            connection.request("POST", "/v1/embeddings", payload, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"/v1/embeddings answered {response.status}")
    finally:
        connection.close()


def measure(
    server: Server,
    pages: list[SearchPage],
    load_pages: list[SearchPage],
    name: str,
    mode: dict[str, Any],
    cache: str,
    args: argparse.Namespace,
) -> Cell:
    latencies, quality, stages = sequential_pass(server, pages, mode)
    wait_idle(server.port)
    payloads = [Payload("rank", body(p, mode), 1 + CANDIDATES) for p in load_pages]
    loaded = asyncio.run(
        run_load(
            server.url, payloads, concurrency=8, duration_s=args.duration, warmup_s=args.warmup, timeout_s=60
        )
    )
    wait_idle(server.port)
    ms = [x * 1e3 for x in latencies]
    s = loaded.stats
    cell = Cell(
        name,
        cache,
        sum(quality) / len(quality),
        percentile(ms, 50),
        percentile(ms, 99),
        s.p50_ms,
        s.p99_ms,
        s.requests_per_s,
        s.errors,
        stages,
    )
    print(
        f"   {name:<22} {cache:<5} NDCG@10 {cell.ndcg_at_10:.4f}  c=1 p50 {cell.c1_p50_ms:6.1f} p99 "
        f"{cell.c1_p99_ms:6.1f} ms  c=8 p50 {s.p50_ms:6.1f} p99 {s.p99_ms:6.1f} ms "
        f"{s.requests_per_s:5.1f} req/s" + (f"  errors {loaded.statuses}" if s.errors else ""),
        flush=True,
    )
    return cell


def modes(depths: list[int]) -> list[tuple[str, dict[str, Any]]]:
    return (
        [("bi-encoder", {"rerank_top_n": 0})]
        + [(f"two-stage N={n}", {"rerank_top_n": n}) for n in depths]
        + [("reranker alone", {"model": "product-reranker"})]
    )


def markdown(cells: list[Cell], machine: str) -> str:
    lines = [
        f"Machine: {machine}",
        "",
        "| mode | cache | NDCG@10 | c=1 p50 / p99 ms | c=8 p50 / p99 ms | c=8 req/s |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c.mode} | {c.cache} | {c.ndcg_at_10:.4f} | {c.c1_p50_ms:.1f} / {c.c1_p99_ms:.1f} | "
            f"{c.c8_p50_ms:.1f} / {c.c8_p99_ms:.1f} | {c.c8_requests_per_s:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--queries", type=int, default=200, help="search pages (validation queries)")
    parser.add_argument("--depths", type=int, nargs="+", default=[10, 20, 30], help="two-stage N values")
    parser.add_argument("--default-depth", type=int, default=10, help="INFERENCE_RANK_RERANK_TOP_N's default")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of each concurrency-8 cell")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    use_uvloop()
    pages, titles = search_pages(args.queries, args.seed)
    load_pages, _ = search_pages(sys.maxsize, args.seed + 1)  # every validation query, for the loops
    env = {"INFERENCE_MODEL_STORE": str(args.store.resolve())}
    machine = describe()
    print(headline(machine), flush=True)
    cells: list[Cell] = []
    log_dir = RESULTS_DIR / "rank-stages-logs"
    for cache, extra in (("warm", {}), ("cold", {"INFERENCE_CACHE_SIZE": "0"})):
        server = start_server(SERVICE_FACTORY, {**env, **extra}, log_dir / f"{cache}.log")
        try:
            print(f"== {cache} cache, server ready in {server.ready_s:.1f}s", flush=True)
            if cache == "warm":
                warm_cache(server, titles)
            for name, mode in modes(args.depths):
                if cache == "cold" and mode.get("rerank_top_n") not in (0, args.default_depth):
                    continue  # the cache only serves the first stage
                cells.append(measure(server, pages, load_pages, name, mode, cache, args))
        finally:
            stop_server(server)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    table = markdown(cells, headline(machine))
    (RESULTS_DIR / f"rank-stages-{stamp}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "args": vars(args) | {"store": str(args.store)},
                "cells": [asdict(c) for c in cells],
            },
            indent=2,
        )
    )
    (RESULTS_DIR / "rank-stages-latest.md").write_text(table)
    print("\n" + table)
    target = next(c for c in cells if c.cache == "warm" and c.mode == f"two-stage N={args.default_depth}")
    ok_c1 = target.c1_p50_ms <= TARGET_P50_C1_MS
    ok_c8 = target.c8_p99_ms <= TARGET_P99_C8_MS
    print(
        f"target two-stage N={args.default_depth}, warm: c=1 p50 {target.c1_p50_ms:.1f} ms "
        f"(<= {TARGET_P50_C1_MS:.0f}) "
        f"{'PASS' if ok_c1 else 'FAIL'}; c=8 p99 {target.c8_p99_ms:.1f} ms (<= {TARGET_P99_C8_MS:.0f}) "
        f"{'PASS' if ok_c8 else 'FAIL'}"
    )
    return 0 if ok_c1 and ok_c8 else 1


if __name__ == "__main__":
    sys.exit(main())
