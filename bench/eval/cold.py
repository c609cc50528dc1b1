"""The cold-item split: items nobody engaged with in training, which only text can place.

A seeded :data:`COLD_SHARE` of the catalog is held out of training entirely: every event on
those items is removed from every user's profile part (so they have no popularity, no
co-engagement, no place in anyone's vectors) while the held-out parts stay as they are. The
items therefore appear only in the test part. A method is scored on the *cold targets* —
each user's held-out positives among those items — with its ordinary top-50 list over every
unseen item (the same candidates as the main table): Recall@50 says how often a new item a
user went on to like made it into what the user would have been shown. Collaborative methods
score cold items 0 and cannot rank them; random shows the chance level (``50 / candidates``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np

from bench.eval.methods import Method, World
from bench.eval.metrics import MethodScore, user_metrics
from bench.movielens import MovieLens, UserSplit

COLD_SHARE: Final = 0.1
COLD_SEED: Final = 0


def cold_items(data: MovieLens, share: float = COLD_SHARE, seed: int = COLD_SEED) -> frozenset[str]:
    """A seeded ``share`` of the catalog (the same items for the validation and test parts)."""
    items = sorted(data.movies, key=lambda i: (len(i), i))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(items), size=round(share * len(items)), replace=False)
    return frozenset(items[k] for k in picked)


def without_items(splits: Sequence[UserSplit], cold: frozenset[str]) -> list[UserSplit]:
    """The splits with every profile event on a ``cold`` item removed (held-out parts kept);
    users left with an empty profile are kept too (they get recommend's fallback)."""
    return [
        UserSplit(s.user_id, tuple(r for r in s.profile if r.item_id not in cold), s.holdout)
        for s in splits
    ]


def score_cold(
    world: World, methods: Mapping[str, Method], cold: frozenset[str]
) -> dict[str, MethodScore]:
    """Each method's metrics on the cold targets of the users that have any (top-10 figures
    are read off the top-50 list, which is all this table asks for)."""
    scores = {name: MethodScore() for name in methods}
    for split in world.splits:
        targets = split.targets & cold
        if not targets:
            continue
        for name, method in methods.items():
            (_, top50), strategy = method(world, split)
            scores[name].add(user_metrics(top50[:10], top50, targets), strategy, split.user_id)
    return scores


def chance(world: World, cold: frozenset[str]) -> float:
    """Expected Recall@50 of a random top 50 on the cold targets: the mean of
    ``50 / candidates`` over the users with cold targets."""
    values = [
        min(1.0, 50 / (len(world.data.movies) - len(s.seen)))
        for s in world.splits
        if s.targets & cold
    ]
    return float(np.mean(values)) if values else 0.0
