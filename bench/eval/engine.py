"""Recommend requests evaluated in numpy: the production request, answered fast.

Why: the numbers must not depend on which of two exactly tied items an engine happens to return
first, and tuning re-scores every user for each candidate setting. The embedded engine answers a
fused recommend over the 1682 MovieLens items in ~4-7 ms on 2 CPU cores, fast enough on its
own, but orders exact ties differently from call to call (below); this evaluator answers the
same request deterministically and, with ``memo``, reuses prefetch searches across settings.
(Scoring the evaluation's table through the real Recommender instead gave the same numbers but
for one NDCG@10 difference of 4e-6.)

What stays production code: the request itself. :func:`plan` hands the stored user point to
:meth:`models.recommend.Recommender.plan` — the very code ``Recommender.recommend`` runs before
its one Query API request (sources, filter, centred queries, formula) — and
:meth:`Engine.execute` answers that ``qm.QueryRequest`` as the store does: exact cosine search
over the float32 unit rows (the engine builds no HNSW graph for 1682 items and searches them
exactly too), the prefetches under the request's exclusion filter, a nested prefetch rescoring
its inner prefetches' union, the ``FormulaQuery`` over the union of the prefetches (a
``$score[i]`` that prefetch ``i`` did not return comes from ``defaults``), float32 scores. Only
the expression nodes ``build_formula`` emits are understood; anything else raises, so a change
in ``models/query_plan.py`` cannot be silently mis-scored.

Exact ties (MovieLens lists a few movies twice under the same title and genres: identical
vectors) go to the item listed first in the catalog (the :class:`ItemIndex` row order), at every
stage. The embedded engine leaves their order unspecified: its plain searches keep a heap's
order, and its formula queries return tied points in an order that changes from call to call
(qdrant-edge-py 0.9). :func:`agreement` therefore replays a sample through the real
``Recommender.recommend`` and counts answers identical and answers the same up to the order of
exact ties; the evaluation records both next to the numbers.

Users the Recommender would answer with a fallback (no usable vector) go to the real Recommender.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from qdrant_client.http import models as qm

from models.collab import COLLAB
from models.recommend import Recommender
from models.store import ITEM_VECTOR, InterestStore, StoredUser, item_point_id, named_vectors

FloatArray = npt.NDArray[np.float64]
#: Largest score difference :func:`same_up_to_ties` accepts: both sides round to float32, the
#: engine sums in its own order (scores here are at most a few units: ~10 float32 ulps).
SCORE_TOLERANCE: Final = 1e-5
_DEFAULT_LIMIT: Final = 10  # a Query API request without ``limit``
_SCORE_VAR = re.compile(r"^\$score\[(\d+)\]$")


class Unsupported(NotImplementedError):
    """The request uses something this evaluator does not implement (never guessed at)."""


@dataclass(frozen=True)
class ItemIndex:
    """The items collection as stored (float32 unit vectors, payloads), one row per item in the
    order given: the catalog order, which breaks exact ties."""

    item_ids: tuple[str, ...]
    point_ids: tuple[str, ...]
    matrix: npt.NDArray[np.float32]
    payloads: tuple[dict[str, Any], ...]
    #: The items' ``collab`` vectors (zero rows where an item has none) and which have one.
    collab: npt.NDArray[np.float32] | None = None
    has_collab: npt.NDArray[np.bool_] | None = None

    @classmethod
    def from_store(cls, store: InterestStore, item_ids: Sequence[str]) -> ItemIndex:
        """Read ``item_ids`` back (vectors and payloads as stored), one row each in that order.

        The row order breaks exact ties (see :class:`Engine`); the evaluation passes the
        catalog in MovieLens id order, the order it loads the items in.
        """
        order = [item_point_id(i) for i in item_ids]
        by_point = dict(zip(order, item_ids, strict=True))
        with_collab = COLLAB in store.item_vector_names()
        wanted = [ITEM_VECTOR, COLLAB] if with_collab else [ITEM_VECTOR]
        records = store.backend.retrieve(
            store.items_collection, order, with_payload=True, with_vectors=wanted
        )
        by_id = {str(r.id): r for r in records}
        missing = [by_point[p] for p in order if p not in by_id]
        if missing:
            raise ValueError(f"{len(missing)} items are not in the store, e.g. {missing[:3]}")
        rows = [by_id[p] for p in order]
        vectors = [named_vectors(r.vector) for r in rows]
        matrix = np.array([v[ITEM_VECTOR] for v in vectors], dtype=np.float32)
        collab = has = None
        if with_collab:
            size = store.item_vector_names()[COLLAB][0]
            zero = np.zeros(size, dtype=np.float32)
            has = np.array([COLLAB in v for v in vectors], dtype=bool)
            collab = np.array([v.get(COLLAB, zero) for v in vectors], dtype=np.float32)
        return cls(
            tuple(item_ids),
            tuple(order),
            matrix.reshape(len(rows), -1),
            tuple(dict(r.payload or {}) for r in rows),
            collab,
            has,
        )

    def field(self, name: str, default: float) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        """A numeric payload field per row (``default`` where absent) and where it is a number."""
        values = np.full(len(self.item_ids), default, dtype=np.float64)
        numeric = np.zeros(len(self.item_ids), dtype=bool)
        for row, payload in enumerate(self.payloads):
            v = payload.get(name)
            if isinstance(v, int | float) and not isinstance(v, bool):
                values[row], numeric[row] = float(v), True
        return values, numeric


def plan(
    recommender: Recommender, user: StoredUser | None, *, limit: int, **options: Any
) -> qm.QueryRequest | None:
    """The Query API request ``Recommender.recommend`` would send for this user
    (:meth:`~models.recommend.Recommender.plan`, the very code recommend runs), or ``None``
    where it would fall back to popular items."""
    vectors = {} if user is None else {n: v.astype(np.float64) for n, v in user.vectors.items()}
    payload = {} if user is None else user.payload
    return recommender.plan(vectors, payload, limit=limit, **options).request


class Engine:
    """Answers planned requests against an :class:`ItemIndex`."""

    def __init__(self, index: ItemIndex, *, memo: bool = False) -> None:
        self.index = index
        #: With ``memo``, prefetch results are kept per (query, limit, excluded rows): a search is
        #: a pure function of those, and tuning asks the same searches with other weights.
        self._memo: dict[tuple[str, bytes, int, bytes], tuple[Any, Any]] | None = (
            {} if memo else None
        )
        self.row_of = {p: i for i, p in enumerate(index.point_ids)}
        # Cosines in float64 (float32 rows · unit float64 query), rounded to float32 only for
        # the final score; the engine's float32 sums differ by a few ulps (SCORE_TOLERANCE).
        self._matrix64 = index.matrix.astype(np.float64)
        # The collaborative vectors: dot products (Qdrant's Dot distance), only items with one.
        self._collab64 = None if index.collab is None else index.collab.astype(np.float64)
        self._fields: dict[tuple[str, float], tuple[FloatArray, npt.NDArray[np.bool_]]] = {}

    def execute(self, request: qm.QueryRequest) -> list[tuple[str, float]]:
        """``[(item_id, score)]`` best first, as the store's ``query_items`` returns them."""
        query = request.query
        if not isinstance(query, qm.FormulaQuery) or request.using is not None:
            raise Unsupported(f"only formula fusion is evaluated, got {type(query).__name__}")
        if request.offset or request.score_threshold is not None or request.lookup_from:
            raise Unsupported("offset, score_threshold or lookup_from")
        allowed = self._allowed(request.filter)
        results = [self._search(p, allowed) for p in _as_list(request.prefetch)]
        # The union in row order: the stable sort below then gives exact ties to the item
        # listed first in the catalog (see the module doc).
        rows = np.unique(np.concatenate([r for r, _ in results] or [np.zeros(0, np.int64)]))
        if not len(rows):
            return []
        scores = []
        for hit_rows, hit_scores in results:
            column = np.zeros(len(self.index.item_ids), dtype=np.float64)
            present = np.zeros(len(self.index.item_ids), dtype=bool)
            column[hit_rows], present[hit_rows] = hit_scores, True
            scores.append((column[rows], present[rows]))
        defaults = dict(query.defaults or {})
        value = self._eval(query.formula, rows, scores, defaults)
        score32 = np.broadcast_to(np.asarray(value, dtype=np.float64), rows.shape).astype(
            np.float32
        )
        if not np.all(np.isfinite(score32)):
            raise ValueError("the formula produced a non-finite score")
        limit = _DEFAULT_LIMIT if request.limit is None else request.limit
        order = np.argsort(-score32, kind="stable")[:limit]
        return [(self.index.item_ids[rows[i]], float(score32[i])) for i in order]

    # -- pieces ----------------------------------------------------------------------------------
    def _allowed(self, query_filter: qm.Filter | None) -> npt.NDArray[np.bool_]:
        allowed = np.ones(len(self.index.item_ids), dtype=bool)
        if query_filter is None:
            return allowed
        if query_filter.must or query_filter.should or query_filter.min_should:
            raise Unsupported("payload filters are not evaluated here (only excluded ids)")
        for cond in query_filter.must_not or []:
            if not isinstance(cond, qm.HasIdCondition):
                raise Unsupported(f"must_not condition {type(cond).__name__}")
            for pid in cond.has_id:
                row = self.row_of.get(str(pid))
                if row is not None:
                    allowed[row] = False
        return allowed

    def _search(
        self, prefetch: qm.Prefetch, allowed: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """One prefetch: a leaf is a nearest search; a prefetch with inner prefetches and a
        vector query rescores their union (the same search, restricted to the union's ids)."""
        if prefetch.filter or prefetch.using not in (ITEM_VECTOR, COLLAB) or prefetch.lookup_from:
            raise Unsupported("filtered, foreign-vector or lookup prefetch")
        if prefetch.score_threshold is not None:
            raise Unsupported("prefetch score_threshold")
        if not isinstance(prefetch.query, list):
            raise Unsupported(f"prefetch query {type(prefetch.query).__name__}")
        limit = _DEFAULT_LIMIT if prefetch.limit is None else prefetch.limit
        if prefetch.prefetch:
            union = np.zeros_like(allowed)
            for sub in _as_list(prefetch.prefetch):
                rows, _ = self._search(sub, allowed)
                union[rows] = True
            if not union.any():
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
            return self._nearest(prefetch.query, limit, allowed & union, prefetch.using)
        return self._nearest(prefetch.query, limit, allowed, prefetch.using)

    def _nearest(
        self,
        vector: list[float],
        limit: int,
        allowed: npt.NDArray[np.bool_],
        using: str | None = ITEM_VECTOR,
    ) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Exact nearest search, the ``limit`` best allowed rows, exact ties to the lower row:
        cosine on ``content`` (float32 rows · unit float64 query), dot product on ``collab``
        (items without a collab vector are not found, as in the store)."""
        query = np.array(vector)
        key = None
        if self._memo is not None:
            key = (str(using), query.tobytes(), limit, np.packbits(allowed).tobytes())
            if key in self._memo:
                return self._memo[key]
        if using == COLLAB:
            if self._collab64 is None or self.index.has_collab is None:
                raise Unsupported("a collab prefetch on items without collab vectors")
            sims = np.dot(self._collab64, query)
            allowed = allowed & self.index.has_collab
        else:
            norm = np.linalg.norm(query)
            query = query / np.where(norm != 0.0, norm, 1e-12)
            sims = np.dot(self._matrix64, query)
        order = np.argsort(-sims, kind="stable")  # exact ties: the lower row first
        order = order[allowed[order]][:limit]
        found = (order.astype(np.int64), sims[order])
        if key is not None and self._memo is not None:
            self._memo[key] = found
        return found

    def _field(self, name: str, default: float) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
        key = (name, default)
        if key not in self._fields:
            self._fields[key] = self.index.field(name, default)
        return self._fields[key]

    def _eval(
        self,
        expr: Any,
        rows: npt.NDArray[np.int64],
        scores: list[tuple[FloatArray, npt.NDArray[np.bool_]]],
        defaults: Mapping[str, Any],
    ) -> FloatArray | float:
        if isinstance(expr, bool):
            raise Unsupported("boolean constant")
        if isinstance(expr, int | float):
            return float(expr)
        if isinstance(expr, str):
            match = _SCORE_VAR.match(expr)
            if match:
                column, present = scores[int(match.group(1))]
                fallback = float(defaults.get(expr, 0.0))
                return np.where(present, column, fallback)
            default = defaults.get(expr)
            values, numeric = self._field(expr, 0.0 if default is None else float(default))
            if default is None and not numeric[rows].all():
                raise ValueError(f"payload field {expr!r} is not a number on every item")
            return values[rows]
        if isinstance(expr, qm.MultExpression):
            out: FloatArray | float = 1.0
            for factor in expr.mult:
                out = out * self._eval(factor, rows, scores, defaults)
            return out
        if isinstance(expr, qm.SumExpression):
            total: FloatArray | float = 0.0
            for term in expr.sum:
                total = total + self._eval(term, rows, scores, defaults)
            return total
        if isinstance(expr, qm.MaxExpression):
            best: FloatArray | float = -math.inf
            for term in expr.max:
                best = np.maximum(best, self._eval(term, rows, scores, defaults))
            return best
        if isinstance(expr, qm.LnExpression):
            inner = np.asarray(self._eval(expr.ln, rows, scores, defaults), dtype=np.float64)
            if np.any(inner <= 0):
                raise ValueError("ln of a non-positive value")
            return np.log(inner)
        if isinstance(expr, qm.Filter):
            return self._condition(expr, rows).astype(np.float64)
        raise Unsupported(f"expression {type(expr).__name__}")

    def _condition(self, flt: qm.Filter, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """The prior's guard: ``range`` and ``values_count`` on a numeric field, all must hold."""
        if flt.should or flt.must_not or flt.min_should:
            raise Unsupported("guard filter with should/must_not")
        ok = np.ones(len(rows), dtype=bool)
        for cond in flt.must or []:
            if not isinstance(cond, qm.FieldCondition):
                raise Unsupported(f"guard condition {type(cond).__name__}")
            values, numeric = self._field(cond.key, math.nan)
            v, n = values[rows], numeric[rows]
            if cond.range is not None and cond.values_count is None:
                r = cond.range
                hold = n.copy()
                for bound, test in ((r.gte, np.greater_equal), (r.gt, np.greater)):
                    if bound is not None:
                        hold &= test(np.nan_to_num(v, nan=-math.inf), bound)
                for bound, test in ((r.lte, np.less_equal), (r.lt, np.less)):
                    if bound is not None:
                        hold &= test(np.nan_to_num(v, nan=math.inf), bound)
                ok &= hold
            elif cond.values_count is not None and cond.range is None:
                vc = cond.values_count
                count = n.astype(np.int64)  # a number counts 1; lists are not produced here
                for bound, test in (
                    (vc.gte, np.greater_equal),
                    (vc.gt, np.greater),
                    (vc.lte, np.less_equal),
                    (vc.lt, np.less),
                ):
                    if bound is not None:
                        ok &= test(count, bound)
            else:
                raise Unsupported("guard condition other than range / values_count")
        return ok


def _as_list(prefetch: qm.Prefetch | list[qm.Prefetch] | None) -> list[qm.Prefetch]:
    if prefetch is None:
        return []
    return prefetch if isinstance(prefetch, list) else [prefetch]


def recommend_ids(
    engine: Engine,
    recommender: Recommender,
    user_id: str,
    user: StoredUser | None,
    *,
    limit: int,
    **options: Any,
) -> tuple[list[str], str]:
    """Item ids best first and the strategy, answering fallbacks with the real Recommender."""
    request = plan(recommender, user, limit=limit, **options)
    if request is not None:
        return [i for i, _ in engine.execute(request)], "personal"
    answer = recommender.recommend(user_id, limit=limit, **options)
    return [i.item_id for i in answer.items], answer.strategy


def agreement(
    engine: Engine,
    recommender: Recommender,
    users: Mapping[str, StoredUser | None],
    calls: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Replay ``calls`` (recommend keyword arguments) for ``users`` through both paths.

    ``identical``: the same items in the same order; ``same_up_to_ties``: the same but for the
    order of exactly tied items (:func:`same_up_to_ties`), which the embedded engine leaves
    unspecified; ``max_abs_score_diff`` over the latter.
    """
    total = same = tied = 0
    worst = 0.0
    for user_id, user in users.items():
        for call in calls:
            request = plan(recommender, user, **call)
            if request is None:
                continue
            real = [(r.item_id, r.score) for r in recommender.recommend(user_id, **call).items]
            # A longer list of the same request (the prefetches are unchanged): what the
            # engine ranks just past the limit, to judge a tie that the limit cuts.
            limit = _DEFAULT_LIMIT if request.limit is None else request.limit
            longer = engine.execute(request.model_copy(update={"limit": limit + 20}))
            mine = longer[:limit]
            total += 1
            same += [i for i, _ in mine] == [i for i, _ in real]
            if len(mine) == len(real) and same_up_to_ties(longer, real):
                tied += 1
                pairs = zip(mine, real, strict=True)
                worst = max([worst, *(abs(a[1] - b[1]) for a, b in pairs)])
    return {
        "queries": total,
        "identical": same,
        "same_up_to_ties": tied,
        "max_abs_score_diff": worst,
    }


def same_up_to_ties(mine: Sequence[tuple[str, float]], real: Sequence[tuple[str, float]]) -> bool:
    """Whether the engine's answer (``mine``, possibly longer) is ``real`` up to exact ties.

    Position by position the scores agree within ``SCORE_TOLERANCE``; every run of exactly
    equal scores in ``real`` holds the same items in ``mine``, except a run the limit cuts
    (the last one), whose items need only be tied in ``mine`` too: ``real``'s members of the
    tie have that same score further down ``mine``.
    """
    n = len(real)
    if len(mine) < n:
        return False
    if any(abs(a[1] - b[1]) > SCORE_TOLERANCE for a, b in zip(mine[:n], real, strict=True)):
        return False
    start = 0
    while start < n:
        end = start + 1
        while end < n and real[end][1] == real[start][1]:
            end += 1
        if {i for i, _ in mine[start:end]} != {i for i, _ in real[start:end]}:
            if end < n or len({s for _, s in mine[start:end]}) != 1:
                return False
            tie_score = mine[start][1]
            scores = dict(mine)
            if any(scores.get(i) != tie_score for i, _ in real[start:end]):
                return False
        start = end
    return True
