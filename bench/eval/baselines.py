"""The classical anchors a team would ship instead: item-kNN and EASE, in numpy.

Both are fitted on the binary training matrix ``X`` (users × items, 1 where the user has any
event on the item in the profile part — the same events the other methods see) and rank a user's
unseen items by ``x_u · W``, with the same candidates (every item not in the profile part) and
the same cut-offs as every other method; exact ties go to the item listed first in the catalog.

- item-kNN: ``W = cosine(X)`` with a zero diagonal (``G_ij / sqrt(G_ii G_jj)``, ``G = XᵀX``);
- EASE (Steck 2019): ``P = (G + λI)⁻¹``, ``W = I − P·diag(1/diag P)`` (zero diagonal), the
  closed form of a ridge regression of every item on the others; ``λ`` is chosen on the
  validation split (:func:`choose_ease_lambda`), never on the test part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from bench.eval.metrics import recall_at
from bench.movielens import MovieLens, UserSplit, split_all

FloatArray = npt.NDArray[np.float64]
EASE_LAMBDAS: Final = (100.0, 250.0, 500.0, 1000.0)


def training_matrix(splits: Sequence[UserSplit], items: Sequence[str]) -> FloatArray:
    """Binary users × items matrix of the profile parts (rows in ``splits`` order)."""
    col = {item: k for k, item in enumerate(items)}
    x = np.zeros((len(splits), len(items)))
    for row, split in enumerate(splits):
        for rating in split.profile:
            x[row, col[rating.item_id]] = 1.0
    return x


def knn_weights(x: FloatArray) -> FloatArray:
    """Item-item cosine similarities of the columns of ``x``, zero diagonal.

    >>> knn_weights(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])).round(3).tolist()
    [[0.0, 0.707, 0.707], [0.707, 0.0, 0.0], [0.707, 0.0, 0.0]]
    """
    gram = x.T @ x
    norms = np.sqrt(np.diag(gram))
    norms[norms == 0] = 1.0
    sims: FloatArray = gram / norms[:, None] / norms[None, :]
    np.fill_diagonal(sims, 0.0)
    return sims


def ease_weights(x: FloatArray, lam: float) -> FloatArray:
    """EASE's item-item weights: ``I − P·diag(1/diag P)``, ``P = (XᵀX + λI)⁻¹``.

    >>> w = ease_weights(np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), 1.0)
    >>> bool(w[0, 1] > 0 and w[1, 2] < 0 and np.all(np.diag(w) == 0))
    True
    """
    precision = np.linalg.inv(x.T @ x + lam * np.eye(x.shape[1]))
    weights: FloatArray = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def top_unseen(
    scores: FloatArray, split: UserSplit, items: Sequence[str], row_of: dict[str, int], k: int
) -> list[str]:
    """The ``k`` best items not in the user's profile part (exact ties: catalog order)."""
    allowed = np.ones(len(items), dtype=bool)
    for item in split.seen:
        allowed[row_of[item]] = False
    order = np.argsort(-scores, kind="stable")
    return [items[r] for r in order[allowed[order]][:k]]


def mean_recall50(
    splits: Sequence[UserSplit], items: Sequence[str], weights: FloatArray, x: FloatArray
) -> float:
    """Mean Recall@50 of ``x_u · weights`` over the users with targets."""
    row_of = {item: k for k, item in enumerate(items)}
    values = [
        recall_at(top_unseen(x[u] @ weights, s, items, row_of, 50), s.targets, 50)
        for u, s in enumerate(splits)
        if s.targets
    ]
    return float(np.mean(values)) if values else 0.0


def choose_ease_lambda(
    data: MovieLens,
    users: Sequence[str] | None = None,
    lambdas: Sequence[float] = EASE_LAMBDAS,
    echo: Callable[[str], None] | None = None,
) -> tuple[float, dict[float, float]]:
    """The ``λ`` with the best validation Recall@50 (the validation split carved from the end
    of each user's training part), and every tried value's score."""
    splits = split_all(data, validation=True, users=users)
    items = list(data.movies)
    x = training_matrix(splits, items)
    scores = {lam: mean_recall50(splits, items, ease_weights(x, lam), x) for lam in lambdas}
    best = max(lambdas, key=lambda lam: (scores[lam], -lam))
    if echo is not None:
        tried = ", ".join(f"{lam:g}: {r:.4f}" for lam, r in scores.items())
        echo(f"EASE λ on the validation split (Recall@50): {tried} -> {best:g}")
    return best, scores
