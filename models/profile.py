"""A user's whole interest picture: every dimension plus the interest clusters. Pure, no I/O.

:class:`UserInterests` is what the embed worker loads from the user's Qdrant point, folds a job's
observations into, and writes back. The point holds one named vector per non-empty dimension
(``short_term``, ``long_term``, ``search``, ``negative``) and per open interest slot
(``interest_0`` … ``interest_{K-1}``), every one a float32 unit vector, and a payload fragment::

    {
      "state": {
        "v": 1,
        "dimensions": {"short_term": {"mass": 2.5, "norm": 2.31, "ref_ts_ms": 1700000000000,
                                      "count": 3}, ...},
        "interests": [{"slot": 0, "mass": 4.0, "norm": 3.7, "ref_ts_ms": 1700000000000,
                       "count": 5, "tags": [["deep learning", 3.0], ["gan", 1.0]],
                       "label": "deep learning", "weight": 0.7}, ...]
      },
      "profile": [{"label": "deep learning", "weight": 0.7}, ...]
    }

Folding a job after a round trip through that storage gives what :func:`batch_compute` gives for
all the events at once (to ~1e-6), however the events were cut into jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from models.clusters import (
    VECTOR_PREFIX,
    ClusterSpec,
    InterestClusters,
    LabelVocabulary,
    ProfileEntry,
    slot_vector_name,
)
from models.interests import (
    DimensionSpec,
    DimensionState,
    Float32Array,
    Observation,
    StateError,
    default_dimensions,
)

STATE_VERSION: Final = 1
STATE_KEY: Final = "state"
PROFILE_KEY: Final = "profile"


@dataclass(frozen=True, slots=True, eq=False)
class InterestSpec:
    """Everything that shapes the math: dimensions, clusters, an optional label vocabulary."""

    dimensions: tuple[DimensionSpec, ...] = field(default_factory=default_dimensions)
    clusters: ClusterSpec = field(default_factory=ClusterSpec)
    vocabulary: LabelVocabulary | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dimensions", tuple(self.dimensions))
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names):
            raise ValueError(f"dimension names must be unique: {names}")
        clash = [n for n in names if n.startswith(VECTOR_PREFIX)]
        if clash:
            raise ValueError(f"dimension names may not start with {VECTOR_PREFIX!r}: {clash}")

    def vector_names(self) -> tuple[str, ...]:
        """Every named vector a user point may carry (create the collection with all of them)."""
        slots = tuple(slot_vector_name(i) for i in range(self.clusters.k))
        return tuple(d.name for d in self.dimensions) + slots


class UserInterests:
    """All of one user's dimension states and interest clusters."""

    __slots__ = ("clusters", "dimensions", "spec")

    def __init__(self, spec: InterestSpec | None = None) -> None:
        self.spec = spec or InterestSpec()
        self.dimensions: dict[str, DimensionState] = {
            d.name: DimensionState(d) for d in self.spec.dimensions
        }
        self.clusters = InterestClusters(self.spec.clusters)

    @property
    def is_empty(self) -> bool:
        """True while no event has landed in any dimension or cluster."""
        return all(d.is_empty for d in self.dimensions.values()) and all(
            s is None for s in self.clusters.slots
        )

    def update(self, observations: Iterable[Observation]) -> None:
        """Fold observations in, in the given order (the caller's per-user event order)."""
        for obs in observations:
            for dim in self.dimensions.values():
                dim.update(obs)
            self.clusters.update(obs)

    def vectors(self) -> dict[str, Float32Array]:
        """Named float32 unit vectors for every dimension and slot that has a direction."""
        out: dict[str, Float32Array] = {}
        for name, dim in self.dimensions.items():
            vec = dim.vector()
            if vec is not None:
                out[name] = vec
        out.update(self.clusters.vectors())
        return out

    def profile(self) -> list[ProfileEntry]:
        """The readable profile: ``[{"label": str, "weight": float}]``, weights in [0, 1] (interest
        mass shares, time-invariant), heaviest first; empty for a user without positive events."""
        return self.clusters.profile(self.spec.vocabulary)

    def to_stored(self) -> tuple[dict[str, Float32Array], dict[str, Any]]:
        """``(named vectors, payload fragment)`` to upsert; see the module doc for the shape."""
        dims = {n: d.to_payload() for n, d in self.dimensions.items() if not d.is_empty}
        state = {
            "v": STATE_VERSION,
            "dimensions": dims,
            "interests": self.clusters.to_payload(self.spec.vocabulary),
        }
        payload: dict[str, Any] = {STATE_KEY: state, PROFILE_KEY: [dict(e) for e in self.profile()]}
        return self.vectors(), payload

    @classmethod
    def from_stored(
        cls,
        vectors: Mapping[str, Any] | None,
        payload: Mapping[str, Any] | None,
        spec: InterestSpec | None = None,
    ) -> UserInterests:
        """Rebuild from a stored point (whole payload is fine: other keys are ignored).

        ``None``/missing state gives an empty user. Stored dimensions no longer configured are
        dropped; new ones start empty. Raises :class:`StateError` on inconsistent state.
        """
        user = cls(spec)
        vectors = vectors or {}
        state = None if payload is None else payload.get(STATE_KEY)
        if state is None:
            return user
        if not isinstance(state, Mapping):
            raise StateError(f"payload[{STATE_KEY!r}] must be an object")
        if state.get("v") != STATE_VERSION:
            raise StateError(f"unknown state version {state.get('v')!r} (this is {STATE_VERSION})")
        dims = state.get("dimensions", {})
        if not isinstance(dims, Mapping):
            raise StateError("state.dimensions must be an object")
        for d in user.spec.dimensions:
            stored = dims.get(d.name)
            if stored is not None:
                if not isinstance(stored, Mapping):
                    raise StateError(f"state.dimensions.{d.name} must be an object")
                user.dimensions[d.name] = DimensionState.from_stored(
                    stored, vectors.get(d.name), spec=d
                )
        user.clusters = InterestClusters.from_stored(
            state.get("interests"), vectors, user.spec.clusters
        )
        return user


def batch_compute(
    observations: Iterable[Observation], spec: InterestSpec | None = None
) -> UserInterests:
    """All observations folded into an empty state at once (tests and offline evaluation)."""
    user = UserInterests(spec)
    user.update(observations)
    return user
