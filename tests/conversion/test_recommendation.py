import numpy as np
import pytest

from conversion.data.interactions import Interactions, load_interactions
from conversion.recommendation import (
    RecommendationTask,
    baseline_scores,
    content_scores,
    hit_and_ndcg,
    report,
)

# Pens go with ink, paper with staples; "pen" is the most popular item.
TOY = Interactions(
    "amazon-office",
    {str(i): name for i, name in enumerate(["pen", "ink", "paper", "stapler", "staples", "desk", "lamp"])},
    {
        "a": ["2", "3", "0", "1"],
        "b": ["0", "1", "5", "2"],
        "c": ["2", "4", "0", "1", "6"],
        "d": ["6", "0", "1", "3"],
    },
)


def test_leave_last_out_holds_out_the_second_to_last_item_for_validation() -> None:
    assert TOY.split("validation")[0] == ("a", ["2", "3"], "0")
    assert TOY.split("test")[0] == ("a", ["2", "3", "0"], "1")
    task = RecommendationTask.build(TOY, "validation", negatives=2)
    assert task.training.shape == (4, 7)
    for user, (history, target) in enumerate(zip(task.histories, task.targets, strict=True)):
        had = {task.items.index(i) for i in TOY.sequences["abcd"[user]]}
        assert target not in history.tolist() or TOY.sequences["abcd"[user]].count(task.items[target]) > 1
        assert not set(task.sampled[user].tolist()) & had  # negatives are items the user never had
        assert task.training[user].sum() == len(set(history.tolist()))


def test_metrics_are_tie_aware_and_the_full_protocol_leaves_the_history_out() -> None:
    task = RecommendationTask.build(TOY, "validation", negatives=2)
    users, items = len(task.targets), len(task.items)
    perfect = np.zeros((users, items))
    perfect[np.arange(users), task.targets] = 1.0
    assert report(task, perfect) == {"sampled": (1.0, 1.0), "full": (1.0, 1.0)}

    # All tied: the target is equally likely at each of the 3 sampled positions (all < 10): a hit, and the
    # expected NDCG of a uniform position.
    hit, ndcg = hit_and_ndcg(np.zeros((users, items)), task, "sampled")
    assert hit == 1.0
    assert ndcg == pytest.approx(np.mean(1 / np.log2(np.arange(3) + 2)))

    history_first = perfect.copy()
    for user, history in enumerate(task.histories):
        history_first[user, history] = 5.0  # already bought: left out of the full ranking
    assert hit_and_ndcg(history_first, task, "full") == (1.0, 1.0)


def test_baselines_learn_popularity_and_co_occurrence_from_histories() -> None:
    task = RecommendationTask.build(TOY, "validation", negatives=2)
    item = task.items.index
    popularity = baseline_scores(task, "popularity")
    assert int(np.argmax(popularity[0])) == item("0")  # "pen" is in three of the four histories
    co = baseline_scores(task, "co-occurrence")
    d = list("abcd").index("d")  # history lamp, pen; pen was bought with ink, never with the desk
    assert co[d, item("1")] > co[d, item("5")] == 0.0
    assert (co >= 0).all()


def test_content_scores_are_cosines_to_the_mean_of_the_last_items() -> None:
    task = RecommendationTask.build(TOY, "validation", negatives=2)
    vectors = np.eye(len(task.items))
    scores = content_scores(task, vectors, history=1)
    for user, history in enumerate(task.histories):
        assert int(np.argmax(scores[user])) == history[-1]


def test_baselines_beat_chance_on_real_purchases() -> None:
    task = RecommendationTask.build(load_interactions("amazon-office"), "validation", max_users=800)
    chance = report(task, baseline_scores(task, "random"))
    assert chance["sampled"][0] == pytest.approx(0.1, abs=0.03)
    for name in ("popularity", "co-occurrence"):
        scores = report(task, baseline_scores(task, name))
        assert scores["sampled"][0] > 2 * chance["sampled"][0]
        assert scores["full"][0] > 2 * chance["full"][0]


def test_recency_weights_favour_the_newest_history_items() -> None:
    task = RecommendationTask.build(TOY, "validation", negatives=2)
    vectors = np.eye(len(task.items))
    plain = content_scores(task, vectors, history=5)
    recent = content_scores(task, vectors, history=5, half_life=1.0)
    for user, history in enumerate(task.histories):
        newest, older = history[-1], history[-2]
        assert plain[user, newest] == pytest.approx(plain[user, older])
        assert recent[user, newest] == pytest.approx(2 * recent[user, older])  # one item older: half


def test_movielens_sequences_are_ratings_in_time_order() -> None:
    data = load_interactions("movielens-100k")
    assert (len(data.sequences), len(data.item_text)) == (943, 1682)
    assert data.item_text["1"] == "Toy Story (Animation, Children's, Comedy)"
    assert sum(len(items) for items in data.sequences.values()) == 100_000
