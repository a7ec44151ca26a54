import pytest

from conversion.data import DataError
from conversion.data.movielens import load_movielens
from conversion.data.ranking import class_names, load_ranking
from conversion.data.sentiment import calibration_texts, load_sentiment


def test_sentiment_sets_and_fixed_samples() -> None:
    full = load_sentiment("sst2_validation")
    assert len(full.texts) == 872
    assert set(full.labels) == {0, 1}
    assert load_sentiment("uci_amazon", 50).texts == load_sentiment("uci_amazon", 50).texts
    assert len(load_sentiment("uci_yelp", 50).texts) == 50


def test_calibration_never_uses_validation_data() -> None:
    assert len(calibration_texts("sst2_train", 10)) == 10
    with pytest.raises(DataError, match="training set"):
        calibration_texts("sst2_validation", 10)
    with pytest.raises(DataError, match="unknown"):
        load_sentiment("sst2_test")


def test_ranking_pool_is_class_names_then_reviews() -> None:
    data = load_ranking(max_queries=20, pool_reviews=30)
    names = class_names()
    assert len(data.queries) == len(data.query_classes) == 20
    assert data.pool[: len(names)] == names
    assert len(data.pool) == len(names) + 30
    assert len(names) > 100


def test_movielens_leave_last_out() -> None:
    data = load_movielens(max_users=12, history=20, negatives=99, seed=0)
    assert len(data.cases) == 12
    assert len(data.item_text) == 1682
    assert data.item_text["1"] == "Toy Story (Animation, Children's, Comedy)"
    for case in data.cases:
        assert len(case.candidates) == 100
        assert len(set(case.candidates)) == 100
        assert 1 <= len(case.history) <= 20
        assert case.candidates[0] not in case.history
        assert not set(case.candidates[1:]) & set(case.history)
    assert [c.candidates for c in data.cases] == [c.candidates for c in load_movielens(12, seed=0).cases]
