import pytest
from pydantic import ValidationError

from conversion.data import DataError
from conversion.data.ranking import class_names, load_ranking
from conversion.data.sentiment import (
    VALIDATION_SETS,
    TrainingMix,
    calibration_texts,
    load_sentiment,
    load_training_mix,
)


def test_sentiment_sets_and_fixed_samples() -> None:
    full = load_sentiment("sst2_validation")
    assert len(full.texts) == 872
    assert set(full.labels) == {0, 1}
    reviews = load_sentiment("amazon_multidomain_validation")
    assert len(reviews.texts) == sum(reviews.class_counts()) == 1597
    assert load_sentiment("uci_amazon", 50).texts == load_sentiment("uci_amazon", 50).texts
    assert len(load_sentiment("uci_yelp", 50).texts) == 50


def test_a_training_mix_balances_the_classes_of_each_set() -> None:
    mix = TrainingMix.model_validate({"sets": {"amazon_sandisk": 1000, "sst2_train": 300}, "seed": 3})
    data = load_training_mix(mix)
    sandisk = load_sentiment("amazon_sandisk")
    negatives = sandisk.class_counts()[0]
    assert negatives < 500  # 93% positive: the negatives limit the sample
    from_sandisk = [
        label for text, label in zip(data.texts, data.labels, strict=True) if text in sandisk.texts
    ]
    assert from_sandisk.count(0) == from_sandisk.count(1) == negatives
    assert len(data.texts) == 2 * negatives + 300
    assert data.class_counts() == [negatives + 150, negatives + 150]
    assert load_training_mix(mix) == data  # same mix and seed, same texts in the same order
    unbalanced = load_training_mix(mix.model_copy(update={"balance_classes": False}))
    assert len(unbalanced.texts) == 1300
    assert unbalanced.class_counts()[1] > 1000


def test_a_training_mix_refuses_validation_sets() -> None:
    for name in VALIDATION_SETS:
        with pytest.raises(ValidationError, match="sst2_train"):
            TrainingMix.model_validate({"sets": {name: 10}})
    with pytest.raises(ValidationError):
        TrainingMix.model_validate({"sets": {}})


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
