"""Per-dimension interest vectors as exactly continuable decayed weighted means. Pure numpy, no I/O.

A dimension (``short_term``, ``long_term``, ``search``, ``negative``) is the exponentially
decayed, weighted mean of the embeddings of the events it accepts. At a reference time ``T`` (the
newest event the dimension has seen)::

    M = Σ wᵢ · 2^(−(T − tᵢ)/h) · xᵢ        S = Σ wᵢ · 2^(−(T − tᵢ)/h)

The interest vector is the direction of ``M`` (cosine similarity ignores length). Because every
term is decayed to the *same* ``T``, the result depends neither on the order in which events arrive
nor on how they are cut into jobs: an event newer than ``T`` first rescales ``M`` and ``S`` to its
own time, an older one is decayed to ``T``.

Qdrant keeps cosine vectors normalised and in float32, so ``M`` itself cannot be stored. What is
stored per dimension is the unit direction (as the Qdrant named vector) plus a small payload —
``mass`` S, ``norm`` |M|, ``ref_ts_ms`` T and ``count`` — from which ``M = direction · norm`` is
rebuilt and the sum continued. The float32 round trip perturbs ``M`` by ~1e-7 relative, so a fold in
many jobs matches the one-shot computation to ~1e-6.

Robustness: ``T`` is the time of the dimension's newest event, whose own term is ``w · 2⁰ = w``,
so ``S ≥ w > 0`` however far apart events are; older terms may decay to (sub)normal zeros, which is
the right answer and never produces NaN or inf. The direction is only ill-conditioned when the
embeddings cancel (|M| ≪ S), which needs anti-correlated vectors; sentence embeddings of real text
practically never are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

#: Below this fraction of its mass a sum's |M| is treated as zero: the events cancel out and the
#: direction is rounding noise.
ZERO_NORM_RATIO: Final = 1e-12

_PAYLOAD_KEYS: Final = ("mass", "norm", "ref_ts_ms", "count")


class StateError(ValueError):
    """Stored state (payload + vectors) that is inconsistent or not readable by this version."""


def decay_factor(dt_ms: int, half_life_s: float) -> float:
    """``2^(−dt/h)``: the weight left after ``dt_ms`` milliseconds; 1.0 for ``dt_ms ≤ 0``.

    Underflows quietly to 0.0 for gaps of thousands of half-lives (never NaN, inf or an exception).
    """
    if dt_ms <= 0:
        return 1.0
    return math.exp2(-(dt_ms / 1000.0) / half_life_s)


def as_unit(vector: Any, *, what: str = "vector") -> FloatArray:
    """A finite, non-zero 1-D array as a float64 unit vector (a new array); ValueError otherwise."""
    arr = np.array(vector, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite values")
    norm = float(np.linalg.norm(arr))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError(f"{what} has zero (or overflowing) norm")
    arr /= norm
    return arr


@dataclass(frozen=True, slots=True, eq=False)
class Observation:
    """One embedded event, ready to fold: event time, signed weight, type, embedding, tags.

    ``vector`` is stored as a read-only float64 unit vector (input is normalised defensively; the
    encoder already returns unit vectors). Observations compare by identity.
    """

    ts_ms: int
    weight: float
    type: str
    vector: FloatArray
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.ts_ms, bool) or not isinstance(self.ts_ms, int | np.integer):
            raise TypeError(f"ts_ms must be an int (epoch ms), got {type(self.ts_ms).__name__}")
        object.__setattr__(self, "ts_ms", int(self.ts_ms))
        weight = float(self.weight)
        if not math.isfinite(weight):
            raise ValueError(f"weight must be finite, got {self.weight!r}")
        object.__setattr__(self, "weight", weight)
        vec = as_unit(self.vector, what="Observation.vector")
        vec.setflags(write=False)
        object.__setattr__(self, "vector", vec)
        object.__setattr__(self, "tags", tuple(self.tags))


@dataclass(frozen=True, slots=True)
class DimensionSpec:
    """Which events feed a dimension and how fast they fade.

    A positive dimension takes events with ``weight > 0`` whose type is in ``event_types``
    (``None``: every type). A ``negative`` dimension takes events with ``weight < 0`` of those types
    and uses ``|weight|``. Events with weight 0 feed nothing.
    """

    name: str
    half_life_s: float
    event_types: frozenset[str] | None = None
    negative: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a dimension needs a name")
        if not self.half_life_s > 0:  # also rejects NaN
            raise ValueError(f"{self.name}: half_life_s must be > 0, got {self.half_life_s!r}")
        if self.event_types is not None:
            object.__setattr__(self, "event_types", frozenset(self.event_types))

    def weight_of(self, obs: Observation) -> float:
        """The weight ``obs`` carries in this dimension; 0.0 when the dimension does not take it."""
        if self.event_types is not None and obs.type not in self.event_types:
            return 0.0
        if self.negative:
            return -obs.weight if obs.weight < 0 else 0.0
        return obs.weight if obs.weight > 0 else 0.0


HOUR_S: Final = 3600.0
DAY_S: Final = 24 * HOUR_S


def default_dimensions() -> tuple[DimensionSpec, ...]:
    """The defaults of DESIGN.md "Dimensions": short_term, long_term, search, negative."""
    return (
        DimensionSpec("short_term", HOUR_S),
        DimensionSpec("long_term", 30 * DAY_S, frozenset({"like", "share", "purchase", "read"})),
        DimensionSpec("search", DAY_S, frozenset({"search"})),
        DimensionSpec("negative", 7 * DAY_S, frozenset({"dislike", "skip"}), negative=True),
    )


class DecayedSum:
    """The running pair (M, S) at reference time T, plus an event count. Shared by dimensions and
    interest clusters; subclasses hook :meth:`_rescaled` to decay anything they keep alongside."""

    __slots__ = ("_count", "_m", "_s", "_t", "half_life_s")

    def __init__(self, half_life_s: float) -> None:
        self.half_life_s = half_life_s
        self._m: FloatArray | None = None  # None until a vector arrives (or when it is zero)
        self._s = 0.0
        self._t: int | None = None
        self._count = 0

    # -- reading ---------------------------------------------------------------------------------
    @property
    def mass(self) -> float:
        """S: the decayed total weight at :attr:`ref_ts_ms`."""
        return self._s

    @property
    def norm(self) -> float:
        """|M|: length of the decayed weighted sum (≤ mass; mass·1 when all vectors agree)."""
        return 0.0 if self._m is None else float(np.linalg.norm(self._m))

    @property
    def ref_ts_ms(self) -> int | None:
        """T: time of the newest event folded in (None while empty)."""
        return self._t

    @property
    def count(self) -> int:
        """How many events were folded in (however much they have decayed)."""
        return self._count

    @property
    def is_empty(self) -> bool:
        return self._count == 0

    def mass_at(self, ts_ms: int) -> float:
        """S decayed to ``ts_ms`` (never increased: a time before T reads as T)."""
        if self._t is None:
            return 0.0
        return self._s * decay_factor(ts_ms - self._t, self.half_life_s)

    def sum_vector(self) -> FloatArray | None:
        """A copy of M, or None while there is no direction."""
        return None if self._m is None else self._m.copy()

    def get(self) -> FloatArray | None:
        """The unit mean direction (float64), or None when empty / the events cancel out."""
        norm = self.norm
        if self._m is None or norm <= ZERO_NORM_RATIO * self._s or norm == 0.0:
            return None
        return self._m / norm

    def vector(self) -> Float32Array | None:
        """What Qdrant stores: the unit direction in float32, or None (store no vector then)."""
        unit = self.get()
        return None if unit is None else unit.astype(np.float32)

    # -- folding ---------------------------------------------------------------------------------
    def _rescaled(self, factor: float) -> None:
        """Hook: everything was just multiplied by ``factor`` (moving T forward)."""

    def _advance_to(self, ts_ms: int) -> None:
        if self._t is None:
            self._t = ts_ms
        elif ts_ms > self._t:
            factor = decay_factor(ts_ms - self._t, self.half_life_s)
            self._s *= factor
            if self._m is not None:
                self._m *= factor
            self._t = ts_ms
            self._rescaled(factor)

    def add(self, vector: FloatArray, weight: float, ts_ms: int) -> float:
        """Fold one term ``weight · vector`` observed at ``ts_ms``; returns its weight at T."""
        if self._m is not None and self._m.shape != vector.shape:
            raise ValueError(f"vector dimension {vector.shape[0]} != state's {self._m.shape[0]}")
        self._advance_to(ts_ms)
        assert self._t is not None
        eff = weight * decay_factor(self._t - ts_ms, self.half_life_s)
        self._s += eff
        if self._m is None:
            self._m = vector * eff
        else:
            self._m += vector * eff
        self._count += 1
        return eff

    def merge(self, other: DecayedSum) -> float:
        """Add ``other``'s terms into this sum; returns the factor applied to ``other``."""
        if other._t is None:
            return 0.0
        if self._m is not None and other._m is not None and self._m.shape != other._m.shape:
            raise ValueError("cannot merge sums of different vector dimensions")
        self._advance_to(other._t)
        assert self._t is not None
        factor = decay_factor(self._t - other._t, self.half_life_s)
        self._s += other._s * factor
        if other._m is not None:
            self._m = other._m * factor if self._m is None else self._m + other._m * factor
        self._count += other._count
        return factor

    # -- persistence -----------------------------------------------------------------------------
    def to_payload(self) -> dict[str, Any]:
        """JSON-safe state next to :meth:`vector`: ``{mass, norm, ref_ts_ms, count}``."""
        norm = self.norm if self.get() is not None else 0.0
        return {"mass": float(self._s), "norm": norm, "ref_ts_ms": self._t, "count": self._count}

    def _load(self, payload: Mapping[str, Any], vector: Any | None, what: str) -> None:
        """Restore from :meth:`to_payload` output and the stored (float32, unit) vector."""
        missing = [k for k in _PAYLOAD_KEYS if k not in payload]
        if missing:
            raise StateError(f"{what}: payload lacks {', '.join(missing)}")
        mass = _finite(payload["mass"], f"{what}.mass")
        norm = _finite(payload["norm"], f"{what}.norm")
        count = payload["count"]
        ref = payload["ref_ts_ms"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise StateError(f"{what}.count must be an int ≥ 0, got {count!r}")
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, int)):
            raise StateError(f"{what}.ref_ts_ms must be an int or null, got {ref!r}")
        if mass < 0 or norm < 0 or norm > mass * (1 + 1e-6) + 1e-300:
            raise StateError(f"{what}: need 0 ≤ norm ≤ mass, got norm={norm} mass={mass}")
        if count > 0 and ref is None:
            raise StateError(f"{what}: count {count} but no ref_ts_ms")
        self._s, self._t, self._count = mass, (None if count == 0 else ref), count
        self._m = None
        if norm > 0:
            if vector is None:
                raise StateError(f"{what}: norm {norm} > 0 but the vector is missing")
            try:
                self._m = as_unit(vector, what=f"{what} vector") * norm
            except ValueError as exc:
                raise StateError(str(exc)) from None


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StateError(f"{what} must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise StateError(f"{what} must be finite, got {value!r}")
    return out


class DimensionState(DecayedSum):
    """One dimension's running state, river-style: :meth:`update` one observation, :meth:`get`
    the unit mean direction. Observations the spec does not take are ignored."""

    __slots__ = ("spec",)

    def __init__(self, spec: DimensionSpec) -> None:
        super().__init__(spec.half_life_s)
        self.spec = spec

    def update(self, obs: Observation) -> None:
        """Fold ``obs`` in if this dimension takes it (see :class:`DimensionSpec`)."""
        weight = self.spec.weight_of(obs)
        if weight > 0:
            self.add(obs.vector, weight, obs.ts_ms)

    @classmethod
    def from_stored(
        cls, payload: Mapping[str, Any] | None, vector: Any | None, *, spec: DimensionSpec
    ) -> DimensionState:
        """Rebuild from :meth:`to_payload` and the stored vector (None/None: a fresh state).

        Raises :class:`StateError` when the two do not fit together.
        """
        state = cls(spec)
        if payload is not None:
            state._load(payload, vector, spec.name)
        return state

    def __repr__(self) -> str:
        return (
            f"DimensionState({self.spec.name!r}, mass={self._s:.6g}, norm={self.norm:.6g}, "
            f"ref_ts_ms={self._t}, count={self._count})"
        )
