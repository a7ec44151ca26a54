"""The load test's pure parts: shapes, payload generators, and the runner's reading of locust's CSVs.
The end-to-end run against a real server is in test_loadtest_smoke.py."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from loadtest.payloads import Corpus, Payloads, size_bucket
from loadtest.run import check, read_summary
from loadtest.shapes import SHAPES, shape_tick


def test_steady_holds_the_peak_until_the_end() -> None:
    ticks = [shape_tick("steady", t, peak_users=16, spawn_rate=4, duration_s=60) for t in (0, 30, 59.9)]
    assert ticks == [(16, 4), (16, 4), (16, 4)]
    assert shape_tick("steady", 60, peak_users=16, spawn_rate=4, duration_s=60) is None


def test_spike_jumps_to_the_peak_in_the_middle_only() -> None:
    users = [shape_tick("spike", t, peak_users=20, spawn_rate=2, duration_s=100) for t in (10, 45, 55, 70)]
    assert [u[0] for u in users if u] == [5, 20, 20, 5]


def test_soak_runs_below_the_peak() -> None:
    tick = shape_tick("soak", 600, peak_users=20, spawn_rate=2, duration_s=3600)
    assert tick is not None
    assert tick[0] == 15


def test_unknown_shape_and_bad_numbers_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown shape"):
        shape_tick("ramp", 0, peak_users=1, spawn_rate=1, duration_s=1)
    with pytest.raises(ValueError, match="positive"):
        shape_tick(SHAPES[0], 0, peak_users=0, spawn_rate=1, duration_s=1)


@pytest.fixture(scope="module")
def real_corpus() -> Corpus:
    return Corpus.load()


def test_payloads_come_from_real_text_when_shared_data_is_there(real_corpus: Corpus) -> None:
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "sentiment" / "uci_amazon.tsv").is_file():
        pytest.fail(f"{data} is missing: the repository expects ../shared beside it")
    assert len(real_corpus.reviews) > 2000
    assert len(real_corpus.queries) == 480
    payloads = Payloads(real_corpus, seed=1)
    reviews = {text for _ in range(50) for text in payloads.sentiment()["texts"]}
    assert any(text in real_corpus.reviews for text in reviews)
    assert payloads.rank()["query"] in real_corpus.queries


def test_payload_sizes_vary_within_the_service_limits(real_corpus: Corpus) -> None:
    payloads = Payloads(real_corpus, seed=2)
    sentiment = [len(payloads.sentiment()["texts"]) for _ in range(300)]
    ranks = [payloads.rank() for _ in range(300)]
    recommends = [payloads.recommend() for _ in range(100)]
    assert min(sentiment) == 1
    assert 8 < max(sentiment) <= 32
    candidate_counts = [len(body["candidates"]) for body in ranks]
    assert min(candidate_counts) >= 10
    assert max(candidate_counts) <= 200
    assert len(set(candidate_counts)) > 20
    for body in ranks:
        ids = [candidate["id"] for candidate in body["candidates"]]
        assert len(ids) == len(set(ids))
    for body in recommends:
        assert 5 <= len(body["history"]) <= 50
        assert 20 <= len(body["candidates"]) <= 100
        history_ids = {item["id"] for item in body["history"]}
        assert len(history_ids.intersection(item["id"] for item in body["candidates"])) <= 1
        times = [item.get("timestamp") for item in body["history"]]
        assert times == sorted(times) if times[0] else set(times) == {None}
    assert any(item.get("event") for body in recommends for item in body["history"])
    owned = [
        body
        for body in recommends
        if {h["id"] for h in body["history"]} & {c["id"] for c in body["candidates"]}
    ]
    assert 5 <= len(owned) <= 40  # about one in five product pages lists an item the user has


def test_payloads_fall_back_to_generated_text_without_data(tmp_path: Path) -> None:
    corpus = Corpus.load(tmp_path)
    assert corpus.reviews == []
    assert corpus.sources["reviews"] == "generated"
    payloads = Payloads(corpus, seed=3)
    assert all(text.strip() for text in payloads.sentiment()["texts"])
    assert payloads.rank()["query"]
    assert len(payloads.recommend()["candidates"]) >= 20


def test_size_bucket_labels() -> None:
    assert [size_bucket(n, (1, 8, 32)) for n in (1, 2, 8, 9, 33)] == ["1", "2-8", "2-8", "9-32", ">32"]


def _write_locust_csvs(prefix: Path, stats: list[dict[str, str]], failures: list[dict[str, str]]) -> None:
    stat_fields = ["Type", "Name", "Request Count", "Failure Count", "Requests/s", "50%", "95%", "99%"]
    with Path(f"{prefix}_stats.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=stat_fields)
        writer.writeheader()
        writer.writerows(stats)
    with Path(f"{prefix}_failures.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Method", "Name", "Error", "Occurrences"])
        writer.writeheader()
        writer.writerows(failures)


def test_runner_counts_shedding_apart_from_failures(tmp_path: Path) -> None:
    prefix = tmp_path / "locust"
    row = {"Type": "POST", "Requests/s": "10.0", "50%": "20", "95%": "80", "99%": "120"}
    _write_locust_csvs(
        prefix,
        [
            {**row, "Name": "rank", "Request Count": "900", "Failure Count": "40"},
            {**row, "Name": "sentiment", "Request Count": "100", "Failure Count": "2"},
            {**row, "Type": "", "Name": "Aggregated", "Request Count": "1000", "Failure Count": "42"},
        ],
        [
            {
                "Method": "POST",
                "Name": "rank",
                "Error": "CatchResponseError('shed: 429 queue full')",
                "Occurrences": "38",
            },
            {
                "Method": "POST",
                "Name": "rank",
                "Error": "CatchResponseError('HTTP 500: boom')",
                "Occurrences": "2",
            },
            {
                "Method": "POST",
                "Name": "sentiment",
                "Error": "CatchResponseError('bad body: x')",
                "Occurrences": "2",
            },
        ],
    )
    summary = read_summary(prefix)
    assert (summary.total.failures, summary.total.shed) == (4, 38)
    assert {r.name: (r.failures, r.shed) for r in summary.rows} == {"rank": (2, 38), "sentiment": (2, 0)}
    assert summary.failure_ratio == pytest.approx(0.004)
    assert check(summary, max_failure_ratio=0.01, max_p95_ms=100, max_shed_ratio=1.0) == []
    problems = check(summary, max_failure_ratio=0.001, max_p95_ms=50, max_shed_ratio=0.01)
    assert len(problems) == 3
