import json
import random
from pathlib import Path

import pytest

from bench.paths import DATA_ROOT, movielens_dir
from bench.payloads import (
    build_payloads,
    product_titles,
    rank_payloads,
    read_payloads,
    recommend_payloads,
    review_texts,
    sentiment_payloads,
    wands_queries,
    write_payloads,
)

needs_data = pytest.mark.skipif(not DATA_ROOT.is_dir(), reason="../shared/data is not beside the checkout")


@needs_data
def test_sentiment_payloads_carry_one_real_review_each() -> None:
    texts = review_texts(DATA_ROOT)
    assert len(texts) > 3000
    payloads = sentiment_payloads(texts, 50, random.Random(0))
    for payload in payloads:
        body = json.loads(payload.body)
        assert payload.endpoint == "sentiment"
        assert payload.texts == 1
        assert len(body["texts"]) == 1
        assert body["texts"][0] in texts


@needs_data
def test_rank_payloads_have_a_query_and_50_to_200_distinct_candidates() -> None:
    queries = wands_queries(DATA_ROOT)
    titles = product_titles(queries, 1000, random.Random(1))
    assert len(set(titles)) == len(titles) == 1000
    payloads = rank_payloads(queries, titles, 30, random.Random(2))
    sizes = []
    for payload in payloads:
        body = json.loads(payload.body)
        ids = [c["id"] for c in body["candidates"]]
        assert body["query"] in {q for q, _ in queries}
        assert 50 <= len(ids) <= 200
        assert len(set(ids)) == len(ids)
        assert payload.texts == 1 + len(ids)
        sizes.append(len(ids))
    assert len(set(sizes)) > 1  # sizes vary across requests


def test_rank_payloads_refuse_a_pool_smaller_than_a_request() -> None:
    with pytest.raises(ValueError, match="at least 200"):
        rank_payloads([("chair", "Chairs")], ["a", "b"], 1, random.Random(0))


def test_recommend_payloads_use_time_ordered_history_and_100_candidates() -> None:
    titles = {str(i): f"title {i}" for i in range(300)}
    histories = [[str(i) for i in range(start, start + 60)] for start in range(0, 200, 20)]
    payloads = recommend_payloads(titles, histories, 20, random.Random(0))
    for payload in payloads:
        body = json.loads(payload.body)
        history, candidates = body["history"], body["candidates"]
        assert 5 <= len(history) <= 50
        assert len(candidates) == 100
        assert payload.texts == len(history) + 100
        # the history is the user's most recent items, in order
        numbers = [int(item["id"].split("-")[1]) for item in history]
        assert numbers == sorted(numbers)
        assert not {c["id"] for c in candidates} & {h["id"] for h in history}


@needs_data
def test_build_payloads_is_deterministic_per_seed() -> None:
    first = build_payloads(DATA_ROOT, movielens_dir(), "rank", 5, seed=7)
    again = build_payloads(DATA_ROOT, movielens_dir(), "rank", 5, seed=7)
    other = build_payloads(DATA_ROOT, movielens_dir(), "rank", 5, seed=8)
    assert [p.body for p in first] == [p.body for p in again]
    assert [p.body for p in first] != [p.body for p in other]


@needs_data
def test_recommend_payloads_from_movielens_when_available() -> None:
    payloads = build_payloads(DATA_ROOT, movielens_dir(), "recommend", 3)
    body = json.loads(payloads[0].body)
    assert body["history"]
    assert len(body["candidates"]) == 100
    assert all(item["text"] for item in body["history"] + body["candidates"])


def test_payload_files_round_trip_and_refuse_unknown_endpoints(tmp_path: Path) -> None:
    payloads = sentiment_payloads(["good", "bad", "fine"], 5, random.Random(0), per_request=3)
    assert all(p.texts == 3 and len(json.loads(p.body)["texts"]) == 3 for p in payloads)
    write_payloads(tmp_path / "p" / "s.jsonl", payloads)
    assert read_payloads(tmp_path / "p" / "s.jsonl") == payloads
    (tmp_path / "bad.jsonl").write_text('{"endpoint": "predict", "texts": 1, "body": "{}"}\n')
    with pytest.raises(ValueError, match="unknown endpoint"):
        read_payloads(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no payloads"):
        read_payloads(tmp_path / "empty.jsonl")
