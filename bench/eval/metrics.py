"""Top-K metrics over held-out positives: Recall@K and NDCG@K (binary relevance).

Recall@K = |top K ∩ targets| / |targets|. NDCG@K = DCG@K / IDCG@K with DCG = Σ 1/log2(rank + 1)
over hits and IDCG the DCG of min(K, |targets|) hits at the top. Users without targets are left
out of the means (their count is reported).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

CUTOFFS: Final = (10, 50)
METRICS: Final = ("recall@10", "recall@50", "ndcg@10", "ndcg@50")


def recall_at(ranked: Sequence[str], targets: frozenset[str], k: int) -> float:
    if not targets:
        raise ValueError("recall needs at least one target")
    return sum(1 for item in ranked[:k] if item in targets) / len(targets)


def ndcg_at(ranked: Sequence[str], targets: frozenset[str], k: int) -> float:
    if not targets:
        raise ValueError("ndcg needs at least one target")
    dcg = sum(1.0 / math.log2(r + 2) for r, item in enumerate(ranked[:k]) if item in targets)
    idcg = sum(1.0 / math.log2(r + 2) for r in range(min(k, len(targets))))
    return dcg / idcg


def user_metrics(
    top10: Sequence[str], top50: Sequence[str], targets: frozenset[str]
) -> dict[str, float]:
    """The four metrics of one user; ``top10`` and ``top50`` come from limit-10 and limit-50
    calls (recommend's candidate depth grows with the limit, so they may differ)."""
    return {
        "recall@10": recall_at(top10, targets, 10),
        "recall@50": recall_at(top50, targets, 50),
        "ndcg@10": ndcg_at(top10, targets, 10),
        "ndcg@50": ndcg_at(top50, targets, 50),
    }


@dataclass
class MethodScore:
    """Running means of one method over users."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))
    users: int = 0
    strategies: dict[str, int] = field(default_factory=dict)
    per_user: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(
        self, values: Mapping[str, float], strategy: str = "personal", user_id: str | None = None
    ) -> None:
        for name in METRICS:
            self.sums[name] += values[name]
        self.users += 1
        self.per_user[user_id if user_id is not None else str(self.users)] = dict(values)
        self.strategies[strategy] = self.strategies.get(strategy, 0) + 1

    def means(self) -> dict[str, float]:
        return {n: (self.sums[n] / self.users if self.users else 0.0) for n in METRICS}


def ratio_ci(
    a: MethodScore,
    b: MethodScore,
    metric: str = "recall@50",
    *,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """95 % paired bootstrap interval of ``mean(a) / mean(b)`` over the users both scored."""
    users = sorted(set(a.per_user) & set(b.per_user))
    if not users:
        return (math.nan, math.nan)
    x = np.array([a.per_user[u][metric] for u in users])
    y = np.array([b.per_user[u][metric] for u in users])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(users), size=(resamples, len(users)))
    num, den = x[idx].mean(axis=1), y[idx].mean(axis=1)
    ratios = num[den > 0] / den[den > 0]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return (float(low), float(high))


def format_table(rows: Iterable[tuple[str, Mapping[str, float]]], title: str = "") -> str:
    """A fixed-width table: method, then the four metrics."""
    head = f"{'method':<34}" + "".join(f"{m:>11}" for m in METRICS)
    lines = [title] if title else []
    lines += [head, "-" * len(head)]
    for name, values in rows:
        lines.append(f"{name:<34}" + "".join(f"{values[m]:>11.4f}" for m in METRICS))
    return "\n".join(lines)
