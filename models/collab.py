"""The collaborative dimension: what users *do*, next to what items *say*. Pure numpy, no I/O.

The language-model dimensions know an item by its text; co-engagement knows it by who engaged
with it together with what. This module holds the math of the collaborative dimension that
``recommend`` fuses with the language-model dimensions (see docs/ARCHITECTURE.md, "Collaborative
dimension"):

1. **Per-user engagement lists** (:func:`engaged_update`): each user point keeps the distinct
   items of its most recent events as ``[item_id, ts_ms, weight]`` (newest last, the latest
   event's time and signed weight, at most ``user_items``) in ``payload["engaged"]``. The embed
   worker folds them like every other part of the point, so the stored ``seq`` guard makes
   replays change nothing, and the state of a user is bounded whatever the user does. Only
   positive entries count as co-engagement and in the query; a negative one still says that
   the item has been seen.
2. **Co-engagement** (:class:`CoEngagement`): the decayed item-item Gram matrix
   ``G_ij = Σ_users d(i, j)`` over pairs of items engaged by the same user, where
   ``d = 2^(−(now − t)/h)`` and ``t`` is the later of the two engagements (``now`` is the newest
   engagement seen: a data clock, so a rebuild of the same lists gives the same matrix).
   It is rebuilt from the users' lists in two passes (count, then accumulate) over at most
   ``max_items`` items — the most engaged — so memory is ``8·max_items²`` bytes whatever the
   traffic, and a hot item is one row like any other.
3. **Item vectors** (:func:`item_embedding`): the top ``rank`` eigenvectors of ``G`` shrunk like
   EASE's ridge (``sqrt(s/(s+λ))`` per eigenvalue ``s``; ``λ`` = ``shrinkage``, in engagements):
   for items ``i ≠ j`` the dot product ``e_i·e_j`` is the low-rank part of EASE's
   ``−λ·(G + λI)⁻¹``, the item-item weights of the EASE closed form without its per-item
   diagonal normalisation. Rows are scaled by ``sqrt(n/rank)``, so a well-supported item's norm
   is about 1 whatever the catalog size, and items with little evidence stay short (weak).
   Items outside the co-engagement get a vector predicted from their content vector by ridge
   regression fitted on the others (:class:`ColdMap`): text alone places a new item in the
   collaborative space. Ridge shrinks the predictions towards the mean, so an item nobody has
   had any event on yet (new) gets its prediction × ``cold_scale``, a seen one (only negative
   events, or beyond ``max_items``) the prediction as it is.
4. **The user's query** (:func:`user_query`): the weighted mean ``Σ a_i·e_i / Σ a_i`` with
   ``a_i = w_i·2^(−(T − t_i)/h)`` over the user's positively engaged items, at query time
   (``T``: the user's newest engagement), so it always uses the current item vectors; recommend
   scores items by ``q·e_j`` (a Dot-product named vector). A mean, not a unit vector: where the
   items' vectors are short (little co-engagement behind them) the collaborative scores are
   small and the language-model dimensions decide.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

COLLAB: Final = "collab"
"""The item vector name of the collaborative dimension, and its name among recommend's sources."""
ENGAGED_KEY: Final = "engaged"
"""User payload key of the engagement list."""
DISTANCE: Final = "Dot"

Entry = tuple[str, int, float]
"""``(item_id, ts_ms, weight ≠ 0)``: one item of one user's recent events."""


@dataclass(frozen=True, slots=True)
class CollabSpec:
    """The shape of the collaborative dimension (``CollabSettings`` builds it)."""

    rank: int = 32
    """Size of the item vectors (eigenvectors kept)."""
    shrinkage: float = 1000.0
    """EASE's λ in engagements: directions supported by fewer engagements fade."""
    pair_half_life_s: float = 365 * 86_400.0
    """How fast a co-engagement loses weight."""
    max_items: int = 4096
    """Most items in the co-engagement matrix (memory ``8·max_items²`` bytes at a rebuild)."""
    user_items: int = 200
    """Engaged items kept per user."""
    cold_ridge: float = 1.0
    """Ridge of the content → collaborative map for items without co-engagement."""
    cold_scale: float = 1.5
    """Length of a new item's predicted vector relative to the ridge map's output."""

    def __post_init__(self) -> None:
        if self.rank < 1 or self.max_items < 2 or self.user_items < 1:
            raise ValueError("rank, max_items and user_items must be positive (max_items ≥ 2)")
        for name in ("shrinkage", "pair_half_life_s", "cold_ridge"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.cold_scale) and self.cold_scale >= 0):
            raise ValueError(f"cold_scale must be a finite number ≥ 0, got {self.cold_scale!r}")


# -- 1. per-user engagement lists -----------------------------------------------------------------


def engaged_update(
    previous: Sequence[Entry], events: Iterable[tuple[str | None, int, float]], cap: int
) -> list[Entry]:
    """The user's engagement list after ``events`` (``(item_id, ts_ms, weight)`` in fold order).

    Events naming an item with a non-zero weight count. An item met again moves to the end with
    the event's time and weight (the latest opinion wins); the ``cap`` newest items are kept.

    >>> engaged_update([("a", 1, 1.0), ("b", 2, 2.0)], [("a", 3, 0.5), (None, 4, 1.0),
    ...                                                 ("c", 5, -1.0), ("d", 6, 0.0)], cap=3)
    [('b', 2, 2.0), ('a', 3, 0.5), ('c', 5, -1.0)]
    """
    entries: dict[str, Entry] = {item: (item, ts, w) for item, ts, w in previous}
    for item, ts, weight in events:
        if item is None or weight == 0 or not math.isfinite(weight):
            continue
        entries.pop(item, None)
        entries[item] = (item, int(ts), float(weight))
    kept = list(entries.values())
    return kept[-cap:] if cap < len(kept) else kept


def engaged_from_payload(payload: Mapping[str, Any]) -> list[Entry]:
    """The engagement list stored in a user payload; malformed entries are skipped.

    >>> engaged_from_payload({"engaged": [["a", 1, 2.0], ["b", "x", 1], "junk", ["c", 3, 0],
    ...                                   ["d", 4, -1]]})
    [('a', 1, 2.0), ('d', 4, -1.0)]
    """
    raw = payload.get(ENGAGED_KEY)
    out: list[Entry] = []
    if not isinstance(raw, list):
        return out
    for entry in raw:
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            continue
        item, ts, weight = entry
        if not isinstance(item, str) or isinstance(ts, bool) or not isinstance(ts, int):
            continue
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            continue
        if math.isfinite(weight) and weight != 0:
            out.append((item, ts, float(weight)))
    return out


def engaged_to_payload(entries: Sequence[Entry]) -> list[list[Any]]:
    """The JSON form of an engagement list (lists, not tuples)."""
    return [[item, ts, weight] for item, ts, weight in entries]


# -- 2. co-engagement -----------------------------------------------------------------------------


class CoEngagement:
    """The decayed co-engagement matrix of at most ``max_items`` items, built in two passes.

    Pass 1, :meth:`count`, sees every user's list and counts the users per item (positive
    entries; every item with any entry is ``seen``) and the newest engagement (the clock);
    :meth:`freeze` keeps the ``max_items`` most engaged items (ties by id); pass 2, :meth:`add`,
    sees the same lists again and accumulates the pairs.

    >>> co = CoEngagement(CollabSpec(max_items=2, pair_half_life_s=1.0))
    >>> lists = [[("a", 0, 1.0), ("b", 1000, 1.0)], [("a", 1000, 1.0), ("c", 1000, 1.0)],
    ...          [("d", 1000, -1.0)]]
    >>> for entries in lists: co.count(entries)
    >>> co.freeze(), sorted(co.seen)
    (('a', 'b'), ['a', 'b', 'c', 'd'])
    >>> for entries in lists: co.add(entries)
    >>> co.gram.tolist()  # the a-b pair formed at 1000 ms: undecayed; a alone at 0 ms: half
    [[1.5, 1.0], [1.0, 1.0]]
    """

    def __init__(self, spec: CollabSpec) -> None:
        self.spec = spec
        self.counts: dict[str, int] = {}
        self.seen: set[str] = set()
        self.now_ms: int | None = None
        self.items: tuple[str, ...] | None = None
        self._row: dict[str, int] = {}
        self.gram: FloatArray = np.zeros((0, 0))

    def count(self, entries: Sequence[Entry]) -> None:
        """Pass 1: one user's list."""
        if self.items is not None:
            raise RuntimeError("count() after freeze()")
        for item, ts, weight in entries:
            self.seen.add(item)
            if weight > 0:
                self.counts[item] = self.counts.get(item, 0) + 1
                self.now_ms = ts if self.now_ms is None else max(self.now_ms, ts)

    def freeze(self) -> tuple[str, ...]:
        """The items kept (most engaged first, ties by id); starts pass 2."""
        ranked = sorted(self.counts, key=lambda i: (-self.counts[i], i))
        self.items = tuple(ranked[: self.spec.max_items])
        self._row = {item: row for row, item in enumerate(self.items)}
        self.gram = np.zeros((len(self.items), len(self.items)))
        return self.items

    def add(self, entries: Sequence[Entry]) -> None:
        """Pass 2: one user's list (the same lists as pass 1)."""
        if self.items is None:
            raise RuntimeError("add() before freeze()")
        if self.now_ms is None:
            return  # no positive engagement anywhere (text-only users): no item to count
        kept = [(self._row[i], ts) for i, ts, w in entries if w > 0 and i in self._row]
        if not kept:
            return
        rows = np.array([r for r, _ in kept], dtype=np.int64)
        age_s = (self.now_ms - np.array([t for _, t in kept], dtype=np.float64)) / 1000.0
        decay = np.exp2(-np.maximum(age_s, 0.0) / self.spec.pair_half_life_s)
        self.gram[np.ix_(rows, rows)] += np.maximum.outer(decay, decay)


# -- 3. item vectors ------------------------------------------------------------------------------


def item_embedding(gram: FloatArray, rank: int, shrinkage: float) -> FloatArray:
    """One row per item of ``gram``: ``V_r·sqrt(s_r/(s_r + λ))·sqrt(n/rank)`` (module doc).

    Columns past the matrix's own rank are zero; each eigenvector's sign makes its largest
    component positive, so the same matrix always gives the same vectors.

    >>> g = np.array([[4.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]])
    >>> e = item_embedding(g, rank=2, shrinkage=1.0)
    >>> e.shape, bool(e[0] @ e[1] > 0), bool(abs(e[0] @ e[2]) < 1e-12)
    ((3, 2), True, True)
    """
    n = gram.shape[0]
    out = np.zeros((n, rank))
    if n == 0:
        return out
    values, vectors = np.linalg.eigh(gram)
    take = min(rank, n)
    values, vectors = values[::-1][:take], vectors[:, ::-1][:, :take]
    values = np.maximum(values, 0.0)
    peak = np.argmax(np.abs(vectors), axis=0)
    signs = np.where(vectors[peak, np.arange(take)] < 0, -1.0, 1.0)
    shrink = np.sqrt(values / (values + shrinkage))
    out[:, :take] = vectors * signs * shrink * math.sqrt(n / rank)
    return out


class ColdMap:
    """Ridge regression from content vectors to collaborative vectors, fitted on the items that
    have both, predicting a vector for an item that only has text.

    >>> m = ColdMap(ridge=1e-6)
    >>> m.add(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([[2.0], [0.0], [2.0]]))
    >>> np.round(m.predict(np.array([[1.0, 0.0], [0.5, 0.5]])), 4).tolist()
    [[2.0], [1.0]]
    """

    def __init__(self, ridge: float) -> None:
        self.ridge = ridge
        self._xtx: FloatArray | None = None
        self._xty: FloatArray | None = None
        self._coef: FloatArray | None = None

    @staticmethod
    def _design(content: FloatArray) -> FloatArray:
        return np.hstack([content, np.ones((content.shape[0], 1))])

    def add(self, content: FloatArray, collab: FloatArray) -> None:
        """Items with both vectors (rows of ``content`` and ``collab`` alike)."""
        x = self._design(np.asarray(content, dtype=np.float64))
        y = np.asarray(collab, dtype=np.float64)
        if self._xtx is None or self._xty is None:
            self._xtx, self._xty = x.T @ x, x.T @ y
        else:
            self._xtx += x.T @ x
            self._xty += x.T @ y
        self._coef = None

    @property
    def fitted(self) -> bool:
        return self._xtx is not None

    def predict(self, content: FloatArray) -> FloatArray:
        """Collaborative vectors for rows of ``content`` (``ValueError`` before any ``add``)."""
        if self._xtx is None or self._xty is None:
            raise ValueError("ColdMap.predict before any add")
        coef = self._coef
        if coef is None:
            penalty = self.ridge * np.eye(self._xtx.shape[0])
            penalty[-1, -1] = 0.0  # the intercept is not shrunk
            coef = np.asarray(np.linalg.solve(self._xtx + penalty, self._xty), dtype=np.float64)
            self._coef = coef
        x = self._design(np.asarray(content, dtype=np.float64))
        predicted: FloatArray = x @ coef
        return predicted


# -- 4. the user's query --------------------------------------------------------------------------


def user_query(
    entries: Sequence[Entry], vectors: Mapping[str, FloatArray], half_life_s: float
) -> FloatArray | None:
    """The weighted mean ``Σ a_i·e_i / Σ a_i``, ``a_i = w_i·2^(−(T − t_i)/h)``, over the
    positive ``entries`` whose item has a vector in ``vectors`` (``T``: the newest of them), or
    ``None`` when there is none or it is zero.

    >>> v = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    >>> np.round(user_query([("a", 0, 1.0), ("b", 3_600_000, 1.0)], v, 3600.0), 4).tolist()
    [0.3333, 0.6667]
    >>> user_query([("z", 0, 1.0)], v, 3600.0) is None
    True
    """
    usable = [(item, ts, w) for item, ts, w in entries if w > 0 and item in vectors]
    if not usable:
        return None
    newest = max(ts for _, ts, _ in usable)
    query = np.zeros(len(next(iter(vectors.values()))))
    mass = 0.0
    for item, ts, weight in usable:
        a = weight * math.exp2(-max(newest - ts, 0) / 1000.0 / half_life_s)
        query += a * vectors[item]
        mass += a
    norm = float(np.linalg.norm(query))
    if not (norm > 1e-12 * mass and math.isfinite(norm)):
        return None
    result: FloatArray = query / mass
    return result
