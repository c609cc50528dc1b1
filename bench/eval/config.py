"""The knobs the evaluation turns: how interests are computed and how recommend scores them.

:class:`EvalParams` gathers every tunable in one frozen, JSON-able record. The interest half
(half-lives, cluster K and threshold) becomes an :class:`~models.profile.InterestSpec` — the
embed worker's math, set through :class:`~models.settings.ProfileSettings` (``INTEREST_PROFILE_*``);
the recommend half (dimension weights, negative and popularity weights, centering) is the
Recommender's :class:`~models.settings.RecommendSettings` (``INTEREST_RECOMMEND_*``).

:data:`LIBRARY` holds the library's own defaults (read from ``models/``, so a change there shows up
here). :data:`CHOSEN` is what tuning on the validation split picked (``python -m bench.eval
--tune``); the evaluation runs with :data:`CHOSEN` unless told otherwise.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from models.clusters import ClusterSpec
from models.collab import COLLAB, CollabSpec
from models.interests import DAY_S, HOUR_S, DimensionSpec
from models.profile import InterestSpec
from models.query_plan import DEFAULT_DIMENSION_WEIGHTS, INTERESTS
from models.settings import CollabSettings, ProfileSettings, RecommendSettings

#: Half-life of the single mean-vector baseline: long enough that a MovieLens user's history
#: (hours to months) is one barely decayed average — the simple thing a team would ship first.
MEAN_HALF_LIFE_S: Final = 365 * DAY_S
MEAN_DIMENSION: Final = "all_positive_mean"


def _field_defaults(
    cls: type[ProfileSettings] | type[RecommendSettings] | type[CollabSettings],
) -> dict[str, Any]:
    """A settings class's own defaults (never the environment the evaluation runs in)."""
    return {n: f.get_default(call_default_factory=True) for n, f in cls.model_fields.items()}


@dataclass(frozen=True, slots=True)
class EvalParams:
    """Interest math + recommend scoring, flat so a grid can vary any field with ``replace``.

    The first six fields are :class:`~models.settings.ProfileSettings` (the embed workers'
    ``INTEREST_PROFILE_*``), the next eight :class:`~models.settings.RecommendSettings`
    (``INTEREST_RECOMMEND_*``), the last three :class:`~models.settings.CollabSettings` (the
    embed workers' ``INTEREST_COLLAB_*``: how the items' collaborative vectors are rebuilt);
    :meth:`profile_settings` / :meth:`recommend_settings` / :meth:`collab_settings` and
    :meth:`env` give them in those forms.
    """

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
    centering: float
    w_collab: float
    collab_half_life_s: float
    collab_rank: int
    collab_shrinkage: float
    collab_cold_scale: float

    # -- the interest half ----------------------------------------------------------------------
    def profile_settings(self) -> ProfileSettings:
        """The embed side's settings (fields not tuned keep the library's defaults)."""
        values = _field_defaults(ProfileSettings)
        values.update(
            short_term_half_life_s=self.short_half_life_s,
            long_term_half_life_s=self.long_half_life_s,
            negative_half_life_s=self.negative_half_life_s,
            cluster_half_life_s=self.cluster_half_life_s,
            cluster_k=self.cluster_k,
            cluster_threshold=self.cluster_threshold,
        )
        return ProfileSettings(**values)

    def spec(self) -> InterestSpec:
        """The InterestSpec the embed worker builds from :meth:`profile_settings`."""
        return self.profile_settings().spec()

    def spec_key(self) -> tuple[float | int, ...]:
        """Equal keys give equal user vectors (what a fold has to be redone for)."""
        return (
            self.short_half_life_s,
            self.long_half_life_s,
            self.negative_half_life_s,
            self.cluster_half_life_s,
            self.cluster_k,
            self.cluster_threshold,
            self.collab_rank,
            self.collab_shrinkage,
            self.collab_cold_scale,
        )

    def collab_settings(self) -> CollabSettings:
        """The embed side's collaborative settings (untuned fields: the library's defaults;
        rebuilt only when a worker stops, as the evaluation reads the store afterwards)."""
        values = _field_defaults(CollabSettings)
        values.update(
            rank=self.collab_rank,
            shrinkage=self.collab_shrinkage,
            cold_scale=self.collab_cold_scale,
            refresh_interval_s=0.0,
        )
        return CollabSettings(**values)

    def collab_spec(self) -> CollabSpec:
        """The CollabSpec the embed worker builds from :meth:`collab_settings`."""
        return self.collab_settings().spec()

    # -- the recommend half ---------------------------------------------------------------------
    def weights(self) -> dict[str, float]:
        """Dimension weights (search keeps the library's weight)."""
        return {
            **DEFAULT_DIMENSION_WEIGHTS,
            "short_term": self.w_short_term,
            "long_term": self.w_long_term,
            INTERESTS: self.w_interests,
            COLLAB: self.w_collab,
        }

    def recommend_settings(self) -> RecommendSettings:
        """The recommend side's settings: the default recommend call uses exactly these."""
        values = _field_defaults(RecommendSettings)
        values.update(
            dimension_weights=self.weights(),
            negative_weight=self.negative_weight,
            popularity_weight=self.popularity_weight,
            centering=self.centering,
            collab_half_life_s=self.collab_half_life_s,
        )
        return RecommendSettings(**values)

    def env(self) -> dict[str, str]:
        """Both halves as the environment variables a deployment would set."""
        out: dict[str, str] = {}
        for prefix, settings in (
            ("INTEREST_PROFILE_", self.profile_settings()),
            ("INTEREST_RECOMMEND_", self.recommend_settings()),
            ("INTEREST_COLLAB_", self.collab_settings()),
        ):
            for name, value in settings.model_dump(mode="json").items():
                text = json.dumps(value) if isinstance(value, dict) else value
                out[prefix + name.upper()] = "" if text is None else str(text)
        return out

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
    """The defaults as they are in ``models/`` today (the settings classes' own defaults)."""
    profile = _field_defaults(ProfileSettings)
    rec = _field_defaults(RecommendSettings)
    collab = _field_defaults(CollabSettings)
    weights = {**DEFAULT_DIMENSION_WEIGHTS, **rec["dimension_weights"]}
    return EvalParams(
        short_half_life_s=profile["short_term_half_life_s"],
        long_half_life_s=profile["long_term_half_life_s"],
        negative_half_life_s=profile["negative_half_life_s"],
        cluster_half_life_s=profile["cluster_half_life_s"],
        cluster_k=profile["cluster_k"],
        cluster_threshold=profile["cluster_threshold"],
        w_short_term=weights["short_term"],
        w_long_term=weights["long_term"],
        w_interests=weights[INTERESTS],
        negative_weight=rec["negative_weight"],
        popularity_weight=rec["popularity_weight"],
        centering=rec["centering"],
        w_collab=weights[COLLAB],
        collab_half_life_s=rec["collab_half_life_s"],
        collab_rank=collab["rank"],
        collab_shrinkage=collab["shrinkage"],
        collab_cold_scale=collab["cold_scale"],
    )


LIBRARY: Final = library_params()

#: What the evaluation runs with: the library defaults, themselves re-chosen on the validation
#: split (centering, popularity weight; bench/README.md). ``python -m bench.eval --tune`` found
#: further validation gains (K 8, short_term half-life 900 s, weights; eval_tuning.json) that
#: were not adopted; the test part was never used to choose anything.
CHOSEN: Final = LIBRARY


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
