"""The classical anchors (item-kNN, EASE) and the cold-item split, on tiny hand-made data."""

from __future__ import annotations

import numpy as np

from bench import movielens as ml
from bench.eval.baselines import (
    ease_weights,
    knn_weights,
    mean_recall50,
    top_unseen,
    training_matrix,
)
from bench.eval.cold import cold_items, without_items
from bench.eval.metrics import MethodScore, ratio_ci


def _rating(order: int, user: str, item: str, rating: float = 5.0) -> ml.Rating:
    return ml.Rating(order, user, item, rating, 1000 * order)


def _split(user: str, profile: list[str], holdout: list[str]) -> ml.UserSplit:
    n = len(profile)
    return ml.UserSplit(
        user,
        tuple(_rating(k, user, i) for k, i in enumerate(profile)),
        tuple(_rating(n + k, user, i) for k, i in enumerate(holdout)),
    )


ITEMS = ["a", "b", "c", "d", "e"]
# "a" and "b" always go together; "c" with "d"; "e" with nothing.
SPLITS = [
    _split("1", ["a", "b"], []),
    _split("2", ["a", "b", "c"], []),
    _split("3", ["c", "d"], []),
    _split("4", ["a"], ["b"]),
    _split("5", ["c"], ["d"]),
]


def test_both_anchors_recommend_what_goes_with_the_users_items() -> None:
    x = training_matrix(SPLITS, ITEMS)
    assert x.sum() == 9 and x[3].tolist() == [1, 0, 0, 0, 0]
    row_of = {i: k for k, i in enumerate(ITEMS)}
    for weights in (knn_weights(x), ease_weights(x, 1.0)):
        assert np.all(np.diag(weights) == 0)
        assert top_unseen(x[3] @ weights, SPLITS[3], ITEMS, row_of, 1) == ["b"]
        assert top_unseen(x[4] @ weights, SPLITS[4], ITEMS, row_of, 1) == ["d"]
        assert mean_recall50(SPLITS, ITEMS, weights, x) == 1.0
    # An item nobody engaged with scores 0 for everyone: the anchors cannot rank it.
    assert not np.any(knn_weights(x)[:, 4]) and not np.any(ease_weights(x, 1.0)[:, 4])


def test_ease_is_the_ridge_regression_of_each_item_on_the_others() -> None:
    rng = np.random.default_rng(4)
    x = (rng.random((60, 6)) < 0.4).astype(float)
    lam = 3.0
    w = ease_weights(x, lam)
    for j in range(6):  # column j: argmin |x_j − X_{-j} w|² + λ|w|²
        others = [k for k in range(6) if k != j]
        xo = x[:, others]
        solo = np.linalg.solve(xo.T @ xo + lam * np.eye(5), xo.T @ x[:, j])
        assert np.allclose(w[others, j], solo)


def test_the_cold_split_holds_items_out_of_training_only() -> None:
    data = ml.MovieLens({i: ml.Movie(i, i, ()) for i in [*ITEMS, *"fghij"]}, ())
    cold = cold_items(data, share=0.2)
    assert len(cold) == 2 and cold == cold_items(data, share=0.2)  # seeded
    splits = [_split("1", ITEMS, [*cold, "a"])]
    held = without_items(splits, cold)
    assert not held[0].seen & cold and held[0].holdout == splits[0].holdout
    assert held[0].targets & cold == cold


def test_the_paired_ratio_interval_covers_the_ratio() -> None:
    a, b = MethodScore(), MethodScore()
    rng = np.random.default_rng(0)
    for u in range(200):
        base = float(rng.random())
        values = {"recall@10": base, "recall@50": base, "ndcg@10": base, "ndcg@50": base}
        a.add({k: 1.2 * v for k, v in values.items()}, user_id=str(u))
        b.add(values, user_id=str(u))
    low, high = ratio_ci(a, b, "ndcg@10")
    assert low <= 1.2 <= high and high - low < 1e-9  # paired: an exact 1.2× has no spread
