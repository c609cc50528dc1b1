"""The knobs the evaluation turns: how interests are computed and how recommend scores them.

:class:`EvalParams` gathers every tunable in one frozen, JSON-able record. The interest half
(half-lives, cluster K and threshold) becomes an :class:`~models.profile.InterestSpec` — the
embed worker's math; the recommend half (dimension weights, negative and popularity weights) is
passed to :meth:`models.recommend.Recommender.recommend` per call.

:data:`LIBRARY` holds the library's own defaults (read from ``models/``, so a change there shows up
here). :data:`CHOSEN` is what tuning on the validation split picked (``python -m bench.eval
--tune``); the evaluation runs with :data:`CHOSEN` unless told otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Final

from models.clusters import ClusterSpec
from models.interests import DAY_S, HOUR_S, DimensionSpec, default_dimensions
from models.profile import InterestSpec
from models.recommend import (
    DEFAULT_DIMENSION_WEIGHTS,
    DEFAULT_NEGATIVE_WEIGHT,
    DEFAULT_POPULARITY_WEIGHT,
    INTERESTS,
)

#: Half-life of the single mean-vector baseline: long enough that a MovieLens user's history
#: (hours to months) is one barely decayed average — the simple thing a team would ship first.
MEAN_HALF_LIFE_S: Final = 365 * DAY_S
MEAN_DIMENSION: Final = "all_positive_mean"


def _default_dims() -> dict[str, DimensionSpec]:
    return {d.name: d for d in default_dimensions()}


@dataclass(frozen=True, slots=True)
class EvalParams:
    """Interest math + recommend scoring, flat so a grid can vary any field with ``replace``."""

    short_half_life_s: float
    long_half_life_s: float
    negative_half_life_s: float
    cluster_half_life_s: float
    cluster_k: int
    cluster_threshold: float
    w_short_term: float
    w_long_term: float
    w_interests: float
    negative_weight: float
    popularity_weight: float

    # -- the interest half ----------------------------------------------------------------------
    def spec(self) -> InterestSpec:
        """The InterestSpec these parameters describe (event types as in the library)."""
        dims = _default_dims()
        out = []
        for d in dims.values():
            half_life = {
                "short_term": self.short_half_life_s,
                "long_term": self.long_half_life_s,
                "negative": self.negative_half_life_s,
            }.get(d.name, d.half_life_s)
            out.append(replace(d, half_life_s=half_life))
        clusters = replace(
            ClusterSpec(),
            k=self.cluster_k,
            half_life_s=self.cluster_half_life_s,
            threshold=self.cluster_threshold,
        )
        return InterestSpec(dimensions=tuple(out), clusters=clusters)

    def spec_key(self) -> tuple[float | int, ...]:
        """Equal keys give equal user vectors (what a fold has to be redone for)."""
        return (
            self.short_half_life_s,
            self.long_half_life_s,
            self.negative_half_life_s,
            self.cluster_half_life_s,
            self.cluster_k,
            self.cluster_threshold,
        )

    # -- the recommend half ---------------------------------------------------------------------
    def weights(self) -> dict[str, float]:
        """``weights=`` for Recommender.recommend (search keeps the library's weight)."""
        return {
            "short_term": self.w_short_term,
            "long_term": self.w_long_term,
            INTERESTS: self.w_interests,
        }

    def recommend_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the default (fused) recommend call."""
        return {
            "weights": self.weights(),
            "negative_weight": self.negative_weight,
            "popularity_weight": self.popularity_weight,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvalParams:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def differences(self, other: EvalParams) -> dict[str, tuple[Any, Any]]:
        """``{field: (self's, other's)}`` where the two differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if mine[k] != theirs[k]}


def library_params() -> EvalParams:
    """The defaults as they are in ``models/`` today."""
    dims = _default_dims()
    clusters = ClusterSpec()
    return EvalParams(
        short_half_life_s=dims["short_term"].half_life_s,
        long_half_life_s=dims["long_term"].half_life_s,
        negative_half_life_s=dims["negative"].half_life_s,
        cluster_half_life_s=clusters.half_life_s,
        cluster_k=clusters.k,
        cluster_threshold=clusters.threshold,
        w_short_term=DEFAULT_DIMENSION_WEIGHTS["short_term"],
        w_long_term=DEFAULT_DIMENSION_WEIGHTS["long_term"],
        w_interests=DEFAULT_DIMENSION_WEIGHTS[INTERESTS],
        negative_weight=DEFAULT_NEGATIVE_WEIGHT,
        popularity_weight=DEFAULT_POPULARITY_WEIGHT,
    )


LIBRARY: Final = library_params()

#: Picked on the validation split by ``python -m bench.eval --tune`` (bench/results/
#: eval_tuning.json; see bench/README.md, "Offline evaluation"); never on the test part.
CHOSEN: Final = replace(
    LIBRARY,
    short_half_life_s=300.0,  # library 1 h: MovieLens rates in sessions; the last minutes lead
    cluster_k=16,  # library 4
    w_short_term=4.0,  # library 1.0
    negative_weight=0.1,  # library 0.5
    popularity_weight=2.0,  # library 0.01
)


def mean_spec(half_life_s: float = MEAN_HALF_LIFE_S) -> InterestSpec:
    """The baseline: one dimension, every positive event, a long half-life; K=1 cluster unused."""
    return InterestSpec(
        dimensions=(DimensionSpec(MEAN_DIMENSION, half_life_s),),
        clusters=ClusterSpec(k=1),
    )


def describe_half_life(seconds: float) -> str:
    """``3600.0`` → ``"1h"``; days when whole, else hours."""
    if seconds % DAY_S == 0:
        return f"{seconds / DAY_S:g}d"
    return f"{seconds / HOUR_S:g}h"
