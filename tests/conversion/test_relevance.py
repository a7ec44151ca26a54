import numpy as np
import pytest

from conversion.data.homedepot import JudgedQuery, load_homedepot
from conversion.relevance import (
    RelevanceSet,
    bm25_scores,
    ndcg_at_k,
    rerank_ndcg,
    shortlist,
    two_stage_scores,
)

JUDGED = [
    JudgedQuery(
        "cordless drill", ["DeWalt 20V Cordless Drill", "Drill Bit Set", "Garden Hose"], [3.0, 2.0, 1.0]
    ),
    JudgedQuery("garden hose", ["Garden Hose", "Hose Nozzle"], [3.0, 2.33]),
    JudgedQuery("paint", ["White Paint"], [3.0]),  # one title: no ranking to judge
    JudgedQuery("lamp", ["Desk Lamp", "Floor Lamp"], [1.0, 1.0]),  # nothing relevant: NDCG undefined
]


def test_a_relevance_set_keeps_rankable_queries_and_one_catalog_of_their_titles() -> None:
    data = RelevanceSet.from_judgements(JUDGED)
    assert data.queries == ["cordless drill", "garden hose"]
    assert data.catalog == sorted(
        {"DeWalt 20V Cordless Drill", "Drill Bit Set", "Garden Hose", "Hose Nozzle"}
    )
    drill = dict(zip((data.catalog[i] for i in data.judged[0]), data.gains[0], strict=True))
    assert drill == {"DeWalt 20V Cordless Drill": 2.0, "Drill Bit Set": 1.0, "Garden Hose": 0.0}


def test_ndcg_is_one_for_the_judged_order_and_the_catalog_setting_punishes_other_queries_titles() -> None:
    data = RelevanceSet.from_judgements(JUDGED)
    perfect = np.zeros((2, len(data.catalog)))
    for q, (judged, gains) in enumerate(zip(data.judged, data.gains, strict=True)):
        perfect[q, judged] = gains + 1.0
    assert ndcg_at_k(data, perfect) == pytest.approx({"rerank": 1.0, "catalog": 1.0})

    intruder = perfect.copy()
    intruder[0, data.catalog.index("Hose Nozzle")] = 10.0  # another query's title tops "cordless drill"
    scores = ndcg_at_k(data, intruder)
    assert scores["rerank"] == pytest.approx(1.0)  # not among the judged titles: reranking cannot see it
    assert scores["catalog"] < 1.0

    reversed_scores = ndcg_at_k(data, -perfect)
    assert reversed_scores["rerank"] < 1.0
    with pytest.raises(ValueError, match="scores"):
        ndcg_at_k(data, perfect[:1])


def test_bm25_ranks_the_title_sharing_the_query_words_first() -> None:
    catalog = ["Garden Hose 50 ft.", "Cordless Drill Kit", "Drills and drill bits", "LED Desk Lamp"]
    scores = bm25_scores(["cordless drill", "the of and"], catalog)
    assert scores.shape == (2, 4)
    assert int(np.argmax(scores[0])) == 1
    assert scores[0, 2] > 0  # "drills" meets "drill" through stemming
    assert scores[0, 0] == scores[0, 3] == 0
    assert not scores[1].any()  # stop words only


def test_bm25_beats_chance_on_the_real_validation_queries() -> None:
    data = RelevanceSet.from_judgements(load_homedepot("validation", max_queries=200))
    bm25 = ndcg_at_k(data, bm25_scores(data.queries, data.catalog))
    chance = ndcg_at_k(data, np.random.default_rng(0).random((len(data.queries), len(data.catalog))))
    assert bm25["catalog"] > chance["catalog"] + 0.3
    assert bm25["rerank"] > chance["rerank"]


def test_rerank_ndcg_is_the_mean_of_each_query_s_own_ndcg() -> None:
    """One sklearn call over padded rows gives what a call per query gives, ties (BM25's zeros) included."""
    from sklearn.metrics import ndcg_score

    data = RelevanceSet.from_judgements(load_homedepot("validation", max_queries=200))
    assert len({len(judged) for judged in data.judged}) > 1  # the rows really are padded
    random_scores = np.random.default_rng(1).normal(size=(len(data.queries), len(data.catalog)))
    for scores in (random_scores, bm25_scores(data.queries, data.catalog)):
        per_query = [
            ndcg_score([gains], [scores[q, judged]], k=10)
            for q, (judged, gains) in enumerate(zip(data.judged, data.gains, strict=True))
        ]
        assert rerank_ndcg(data, scores) == pytest.approx(float(np.mean(per_query)), abs=1e-12)


def test_two_stage_puts_the_shortlist_first_in_the_second_stage_s_order() -> None:
    first = np.array([[0.9, 0.1, 0.5, 0.7, 0.3], [0.0, 0.2, 0.4, 0.6, 0.8]])
    top = shortlist(first, 2)
    assert top.tolist() == [[0, 3], [4, 3]]
    combined = two_stage_scores(first, top, np.array([[1.0, 5.0], [-3.0, 7.0]]))
    assert np.argsort(-combined, axis=1).tolist() == [[3, 0, 2, 4, 1], [3, 4, 2, 1, 0]]


def test_a_query_sample_keeps_the_whole_catalog() -> None:
    data = RelevanceSet.from_judgements(load_homedepot("validation"))
    sample = data.sample_queries(30, seed=1)
    assert len(sample.queries) == 30
    assert sample.catalog == data.catalog
    first = sample.queries[0]
    q = data.queries.index(first)
    assert sample.judged[0].tolist() == data.judged[q].tolist()
    assert data.sample_queries(None, 0) is data
