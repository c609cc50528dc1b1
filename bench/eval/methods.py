"""The compared methods and the loop that scores them on a split.

Every method ranks the items a user has not seen in the profile part; a method's top 10 and top 50
come from calls with ``limit=10`` and ``limit=50`` (recommend's candidate depth follows the limit):

- ``random``: a seeded shuffle of the candidates;
- ``popularity``: most interactions in the training part first;
- ``item-kNN`` and ``EASE``: the classical anchors (:mod:`bench.eval.baselines`), fitted on the
  binary training matrix of the same profile parts;
- ``mean vector``: one :class:`~models.interests.DimensionSpec` over every positive event with a
  365-day half-life (:func:`bench.eval.config.mean_spec`, computed by
  :func:`models.profile.batch_compute`), nearest items by cosine — a single-vector search;
- ``<dimension> alone``: ``Recommender.recommend(dimensions=[d])`` without negatives or prior
  (``collab alone``: the collaborative dimension, :mod:`models.collab`);
- ``default without collab``: the default recommend with the collaborative weight at 0 (the
  language-model dimensions, negatives and prior only);
- ``fusion, no prior``: the default fused recommend with ``popularity_weight=0``;
- ``default recommend``: fused dimensions, clusters and the collaborative dimension, negatives,
  popularity prior.

Recommend variants are planned exactly as ``Recommender.recommend`` plans them and answered by
:mod:`bench.eval.engine`; users the Recommender would answer with its popularity fallback get the
real Recommender's answer.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.eval.baselines import ease_weights, knn_weights, top_unseen, training_matrix
from bench.eval.config import MEAN_DIMENSION, EvalParams, mean_spec
from bench.eval.engine import Engine, ItemIndex, recommend_ids
from bench.eval.metrics import MethodScore, user_metrics
from bench.eval.world import user_job
from bench.movielens import MovieLens, UserSplit
from models.collab import COLLAB
from models.interests import Observation
from models.profile import batch_compute
from models.query_plan import INTERESTS, FloatArray, centered_queries
from models.recommend import Recommender, catalog_centroid
from models.settings import RecommendSettings
from models.store import StoredUser

Ranking = tuple[list[str], list[str]]  # (top 10, top 50)


@dataclass
class World:
    """Everything one evaluation run reads: data, splits, the store's items and users."""

    data: MovieLens
    splits: list[UserSplit]
    index: ItemIndex
    users: dict[str, StoredUser | None]
    recommender: Recommender
    popularity: Mapping[str, int]
    memo: bool = False  # keep prefetch results (tuning re-asks them with other weights)
    engine: Engine = field(init=False)
    row_of_item: dict[str, int] = field(init=False)
    fitted: dict[str, Any] = field(init=False, default_factory=dict)  # baselines, per world

    def __post_init__(self) -> None:
        self.engine = Engine(self.index, memo=self.memo)
        self.row_of_item = {item: row for row, item in enumerate(self.index.item_ids)}

    def centroid(self) -> FloatArray | None:
        """The catalog centroid as recommend computes it (whatever its settings say)."""
        if not hasattr(self, "_centroid"):
            r = self.recommender
            sample = r.settings.centroid_sample
            self._centroid = catalog_centroid(r.store, sample)
        return self._centroid

    def with_settings(self, settings: RecommendSettings) -> World:
        """The same world scored by a Recommender with other settings (shares the engine)."""
        r = self.recommender
        other = Recommender(r.store, settings=settings)
        clone = copy.copy(self)
        clone.recommender = other
        return clone


Method = Callable[[World, UserSplit], tuple[Ranking, str]]


def recommend_variants(params: EvalParams | None = None) -> dict[str, dict[str, Any]]:
    """Name → recommend keyword arguments, for every recommend-based method. Everything not
    given comes from the Recommender's settings (:meth:`EvalParams.recommend_settings`): the
    default recommend is a call with no tuning arguments at all."""
    alone = {"negative_weight": 0.0, "popularity_weight": 0.0}
    return {
        "short_term alone": {"dimensions": ["short_term"], **alone},
        "long_term alone": {"dimensions": ["long_term"], **alone},
        "interests alone": {"dimensions": [INTERESTS], **alone},
        "collab alone": {"dimensions": [COLLAB], **alone},
        "default without collab": {"weights": {COLLAB: 0.0}},
        "fusion, no prior": {"popularity_weight": 0.0},
        "default recommend": {},
    }


def recommend_method(options: Mapping[str, Any], limits: Sequence[int] = (10, 50)) -> Method:
    """A recommend variant: its top 10 and top 50 from calls with those limits (``limits=(50,)``:
    the top 10 is read off the top-50 call)."""

    def run(world: World, split: UserSplit) -> tuple[Ranking, str]:
        user = world.users.get(split.user_id)
        seen = sorted(split.seen)
        top = {}
        strategy = "personal"
        for limit in limits:
            ids, strategy = recommend_ids(
                world.engine, world.recommender, split.user_id, user,
                limit=limit, exclude_items=seen, **options,
            )  # fmt: skip
            top[limit] = ids
        return (top.get(10, top[50][:10]), top[50]), strategy

    return run


_recommend = recommend_method


def _candidates(world: World, split: UserSplit) -> list[str]:
    """Unseen items in MovieLens id order (independent of the store's row order)."""
    seen = split.seen
    return [i for i in world.data.movies if i not in seen]


def random_method(seed: int) -> Method:
    def run(world: World, split: UserSplit) -> tuple[Ranking, str]:
        digest = hashlib.sha256(f"{seed}:{split.user_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        cands = _candidates(world, split)
        order = [cands[i] for i in rng.permutation(len(cands))[:50]]
        return (order[:10], order), "random"

    return run


def popularity_method(world: World, split: UserSplit) -> tuple[Ranking, str]:
    cands = _candidates(world, split)  # sorted() is stable: ties stay in id order
    order = sorted(cands, key=lambda i: -world.popularity.get(i, 0))[:50]
    return (order[:10], order), "popular"


def mean_vector_method(half_life_s: float | None = None, *, centred: bool = False) -> Method:
    """The single-vector baseline; ``centred`` queries with the mean minus the catalog centroid
    (recommend's centering, for the table only: it shows how much of the fusion's gain is the
    centering itself)."""
    spec = mean_spec() if half_life_s is None else mean_spec(half_life_s)

    def run(world: World, split: UserSplit) -> tuple[Ranking, str]:
        job = user_job(world.data, split)
        observations = [
            Observation(e.ts_ms, e.weight, e.type,
                        world.index.matrix[world.row_of_item[str(e.item_id)]], e.tags)
            for e in job.events
        ]  # fmt: skip
        state = batch_compute(observations, spec).dimensions[MEAN_DIMENSION]
        vector = state.vector()
        if vector is None:  # no positive event: the same popularity fallback recommend uses
            return popularity_method(world, split)
        if centred:
            payload = {"state": {"dimensions": {MEAN_DIMENSION: state.to_payload()}}}
            queries = centered_queries(
                {MEAN_DIMENSION: vector.astype(np.float64)}, payload,
                world.centroid(), 1.0,
            )  # fmt: skip
            vector = queries[MEAN_DIMENSION]
        allowed = np.ones(len(world.index.item_ids), dtype=bool)
        for item in split.seen:
            allowed[world.row_of_item[item]] = False
        sims = world.index.matrix @ (vector.astype(np.float64) / np.linalg.norm(vector))
        order = np.argsort(-sims, kind="stable")  # exact ties: the item listed first
        top = [world.index.item_ids[r] for r in order[allowed[order]][:50]]
        return (top[:10], top), "personal"

    return run


def item_item_method(name: str, fit: Callable[[Any], Any]) -> Method:
    """A baseline scoring ``x_u · W`` with ``W = fit(X)`` (:mod:`bench.eval.baselines`), fitted
    once per world on its splits' profile parts."""

    def run(world: World, split: UserSplit) -> tuple[Ranking, str]:
        items = list(world.data.movies)
        if name not in world.fitted:
            x = training_matrix(world.splits, items)
            rows = {s.user_id: k for k, s in enumerate(world.splits)}
            world.fitted[name] = (fit(x), x, rows, {item: k for k, item in enumerate(items)})
        weights, x, rows, row_of = world.fitted[name]
        top = top_unseen(x[rows[split.user_id]] @ weights, split, items, row_of, 50)
        return (top[:10], top), "item-item"

    return run


def baseline_methods(ease_lambda: float) -> dict[str, Method]:
    """The classical anchors: item-kNN and EASE with ``λ = ease_lambda``."""
    return {
        "item-kNN": item_item_method("item-kNN", knn_weights),
        "EASE": item_item_method(f"EASE {ease_lambda:g}", lambda x: ease_weights(x, ease_lambda)),
    }


def all_methods(params: EvalParams, seed: int = 0, ease_lambda: float = 500.0) -> dict[str, Method]:
    methods: dict[str, Method] = {
        "random": random_method(seed),
        "popularity": popularity_method,
        **baseline_methods(ease_lambda),
        "mean vector (365d, all positives)": mean_vector_method(),
        "mean vector, centred (365d)": mean_vector_method(centred=True),
    }
    methods.update({name: _recommend(opts) for name, opts in recommend_variants(params).items()})
    return methods


def score_methods(
    world: World, methods: Mapping[str, Method], splits: Sequence[UserSplit] | None = None
) -> tuple[dict[str, MethodScore], dict[str, dict[str, Ranking]]]:
    """Mean metrics per method over users with targets, and every user's top lists."""
    scores = {name: MethodScore() for name in methods}
    rankings: dict[str, dict[str, Ranking]] = {name: {} for name in methods}
    for split in splits if splits is not None else world.splits:
        targets = split.targets
        if not targets:
            continue
        for name, method in methods.items():
            (top10, top50), strategy = method(world, split)
            scores[name].add(user_metrics(top10, top50, targets), strategy, split.user_id)
            rankings[name][split.user_id] = (top10, top50)
    return scores, rankings
