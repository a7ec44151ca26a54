"""Storefront traffic for locust: search pages rank products, product pages ask for recommendations,
review pages score review sentiment. Every response body is checked, not only its status.

    .venv/bin/locust --config loadtest/locust.conf                       # web UI on :8089
    .venv/bin/python -m loadtest.run --run-time 60s --users 16           # headless, with thresholds

A 429 (the service shedding load) is reported as a failure whose message starts with "shed:", so that
loadtest/run.py can count shedding apart from real failures.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
from pathlib import Path
from typing import Any

from locust import FastHttpUser, LoadTestShape, between, events, task
from locust.argument_parser import LocustArgumentParser

# locust imports this file by path; the package next to it must be importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.payloads import Body, Corpus, Payloads, size_bucket
from loadtest.shapes import SHAPES, shape_tick

CORPUS: Corpus | None = None
_USER_NUMBERS = itertools.count()


@events.init_command_line_parser.add_listener
def _add_arguments(parser: LocustArgumentParser) -> None:
    parser.add_argument(
        "--shape", choices=sorted(SHAPES), default="steady", help="load shape: steady, spike or soak"
    )
    parser.add_argument(
        "--api-token",
        default=os.environ.get("LOADTEST_API_TOKEN", ""),
        help="bearer token, if the service wants one",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the payload generators (user n draws with seed + n)"
    )


@events.init.add_listener
def _load_corpus(**_: Any) -> None:
    global CORPUS
    CORPUS = Corpus.load()
    print(f"payload sources: {CORPUS.sources}", file=sys.stderr)


def _problem(body: Any, request: Body, endpoint: str) -> str | None:
    """What is wrong with a 200 response body, or None."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body.get("version"):
        return "response names no model and version"
    results = body.get("results")
    if not isinstance(results, list):
        return "no results list"
    if endpoint == "sentiment":
        if len(results) != len(request["texts"]):
            return f"{len(results)} results for {len(request['texts'])} texts"
        for result in results:
            probabilities = result.get("probabilities", {})
            if result.get("label") not in probabilities:
                return f"label {result.get('label')!r} not among the probabilities"
            if not math.isclose(sum(probabilities.values()), 1.0, abs_tol=1e-3):
                return "probabilities do not sum to 1"
            if not isinstance(result.get("truncated"), bool):
                return "no truncated flag"
        return None
    candidates = {candidate["id"] for candidate in request["candidates"]}
    if endpoint == "recommend" and request.get("exclude_history", True):
        owned = candidates & {item["id"] for item in request["history"]}
        if set(body.get("excluded", ())) != owned:
            return f"excluded {body.get('excluded')}, expected the owned candidates {sorted(owned)}"
        candidates -= owned
    expected = min(request.get("top_k") or len(candidates), len(candidates))
    if len(results) != expected:
        return f"{len(results)} results, expected {expected}"
    ids = [result.get("id") for result in results]
    if not set(ids) <= candidates or len(set(ids)) != len(ids):
        return "results are not distinct candidate ids"
    scores = [result.get("score") for result in results]
    if not all(isinstance(score, int | float) and math.isfinite(score) for score in scores):
        return "non-numeric score"
    segments = [scores]
    if endpoint == "rank":
        stages = body.get("stages")
        if not isinstance(stages, list) or not stages:
            return "no stages"
        if len(stages) == 2:  # the reranker's scores first, then the first stage's: each stage in order
            reranked = stages[1].get("candidates", 0)
            segments = [scores[:reranked], scores[reranked:]]
    if any(a < b for segment in segments for a, b in itertools.pairwise(segment)):
        return "results not ordered best first"
    return None


class StorefrontUser(FastHttpUser):
    """One shopper's browser session talking to the storefront backend, which calls the service."""

    wait_time = between(0.1, 1.0)  # think time between page views
    network_timeout = 30.0
    connection_timeout = 5.0

    def on_start(self) -> None:
        assert CORPUS is not None
        options = self.environment.parsed_options
        seed = getattr(options, "seed", 0) if options is not None else 0
        self.payloads = Payloads(CORPUS, seed=seed + next(_USER_NUMBERS))
        token = getattr(options, "api_token", "") if options is not None else ""
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _post(self, endpoint: str, body: Body, name: str) -> None:
        with self.rest("POST", f"/v1/{endpoint}", json=body, name=name, headers=self.headers) as response:
            if response.status_code == 429:
                response.failure("shed: 429 queue full")
            elif response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif (problem := _problem(response.js, body, endpoint)) is not None:
                response.failure(f"bad body: {problem}")

    @task(5)
    def search_page(self) -> None:
        body = self.payloads.rank()
        self._post("rank", body, f"search page: rank [{size_bucket(len(body['candidates']), (20, 50, 200))}]")

    @task(3)
    def product_page(self) -> None:
        body = self.payloads.recommend()
        bucket = size_bucket(len(body["history"]), (10, 25, 50))
        self._post("recommend", body, f"product page: recommend [history {bucket}]")

    @task(2)
    def review_page(self) -> None:
        body = self.payloads.sentiment()
        self._post(
            "sentiment", body, f"review page: sentiment [{size_bucket(len(body['texts']), (1, 8, 32))}]"
        )


class StorefrontShape(LoadTestShape):
    """Users over time for the shape named by --shape, peaking at -u users, over --run-time."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        options = self.runner.environment.parsed_options if self.runner is not None else None
        if options is None:
            return None
        return shape_tick(
            options.shape,
            self.get_run_time(),
            peak_users=int(options.num_users or 1),
            spawn_rate=float(options.spawn_rate or 1),
            duration_s=float(options.run_time or 60),
        )
