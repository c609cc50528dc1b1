"""Recommend requests evaluated in numpy: the production request, answered fast.

Why: qdrant-client's embedded (local) mode evaluates filters and score formulas in pure Python,
point by point; one fused recommend over the 1682 MovieLens items takes ~0.5 s on 2 CPU cores, so
943 users × several variants × two cut-offs would take most of an hour. A Qdrant server answers
such a query in milliseconds, but the evaluation must run without one.

What stays production code: the request itself. :func:`plan` hands the stored user point to
:meth:`models.recommend.Recommender.plan` — the very code ``Recommender.recommend`` runs before
its one ``query_points`` (sources, filter, centred queries, formula) — and
:meth:`Engine.execute` answers that request the way
qdrant-client's local mode does (``local_collection.py``: ``search`` → ``np.argsort`` over
``float32 vectors @ unit query``, the prefetches under the propagated filter, the
``FormulaQuery`` rescoring over the prefetches' union in union order, ``float32`` scores, a stable
sort), vectorised. Only the expression nodes ``build_formula`` emits are understood; anything else
raises, so a change in ``models/query_plan.py`` cannot be silently mis-scored.

Users the Recommender would answer with a fallback (no usable vector) go to the real Recommender.
:func:`agreement` replays a sample through the real ``Recommender.recommend`` on embedded Qdrant
and reports how many answers are identical; the evaluation records it next to the numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from qdrant_client.http import models as qm

from models.recommend import Recommender
from models.store import ITEM_VECTOR, InterestStore, StoredUser, item_point_id

FloatArray = npt.NDArray[np.float64]
_SCORE_VAR = re.compile(r"^\$score\[(\d+)\]$")


class Unsupported(NotImplementedError):
    """The request uses something this evaluator does not implement (never guessed at)."""


@dataclass(frozen=True)
class ItemIndex:
    """The items collection as local mode holds it: rows in insertion order, float32 unit rows."""

    item_ids: tuple[str, ...]
    point_ids: tuple[str, ...]
    matrix: npt.NDArray[np.float32]
    payloads: tuple[dict[str, Any], ...]

    @classmethod
    def from_store(cls, store: InterestStore, item_ids: Sequence[str]) -> ItemIndex:
        """Read ``item_ids`` back (vectors and payloads as stored) in local mode's row order.

        Rows matter only for exact ties (MovieLens lists a few movies twice, with identical
        texts and so identical vectors): local mode's ``np.argsort`` breaks them by row. Rows are
        insertion order in a fresh collection and reversed after a reopen (its storage loads
        ``ORDER BY rowid DESC``), so the order is read from the local collection itself; with a
        server the given order is used.
        """
        order = [item_point_id(i) for i in item_ids]
        by_point = dict(zip(order, item_ids, strict=True))
        rows_of = _local_rows(store)
        if rows_of is not None:
            order = [p for p in rows_of if p in by_point] + [p for p in order if p not in rows_of]
        records = store.client.retrieve(
            store.items_collection, ids=order, with_payload=True, with_vectors=[ITEM_VECTOR]
        )
        by_id = {str(r.id): r for r in records}
        missing = [by_point[p] for p in order if p not in by_id]
        if missing:
            raise ValueError(f"{len(missing)} items are not in the store, e.g. {missing[:3]}")
        rows = [by_id[p] for p in order]
        matrix = np.array([r.vector[ITEM_VECTOR] for r in rows], dtype=np.float32)  # type: ignore[index]
        return cls(
            tuple(by_point[p] for p in order),
            tuple(order),
            matrix,
            tuple(dict(r.payload or {}) for r in rows),
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
) -> dict[str, Any] | None:
    """The ``query_points`` arguments ``Recommender.recommend`` would send for this user
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
        self._memo: dict[tuple[bytes, int, bytes], tuple[Any, Any]] | None = {} if memo else None
        self.row_of = {p: i for i, p in enumerate(index.point_ids)}
        # Local mode computes float32 rows · float64 query, which numpy does in float64: casting
        # the rows once gives the same bits without a cast per query.
        self._matrix64 = index.matrix.astype(np.float64)
        self._fields: dict[tuple[str, float], tuple[FloatArray, npt.NDArray[np.bool_]]] = {}

    def execute(self, request: Mapping[str, Any]) -> list[tuple[str, float]]:
        """``[(item_id, score)]`` best first, as local mode's ``query_points`` returns them."""
        allowed = self._allowed(request.get("query_filter"))
        query = request["query"]
        if not isinstance(query, qm.FormulaQuery) or "using" in request:
            raise Unsupported(f"only formula fusion is evaluated, got {type(query).__name__}")
        results = [self._search(p, allowed) for p in request["prefetch"]]
        union = list(dict.fromkeys(int(r) for rows, _ in results for r in rows))
        if not union:
            return []
        rows = np.array(union, dtype=np.int64)
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
        order = np.argsort(-score32, kind="stable")[: int(request["limit"])]
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
        """One prefetch as local mode answers it: a leaf is a ``search``; a prefetch with inner
        prefetches and a vector query rescores their union (local mode's ``_merge_sources``:
        the same search, restricted to the union's ids)."""
        if prefetch.filter or prefetch.using != ITEM_VECTOR:
            raise Unsupported("filtered or foreign-vector prefetch")
        if not isinstance(prefetch.query, list):
            raise Unsupported(f"prefetch query {type(prefetch.query).__name__}")
        limit = int(prefetch.limit or 10)
        if prefetch.prefetch:
            inner = prefetch.prefetch
            inner = inner if isinstance(inner, list) else [inner]
            union = np.zeros_like(allowed)
            for sub in inner:
                rows, _ = self._search(sub, allowed)
                union[rows] = True
            if not union.any():
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
            return self._nearest(prefetch.query, limit, allowed & union)
        return self._nearest(prefetch.query, limit, allowed)

    def _nearest(
        self, vector: list[float], limit: int, allowed: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.int64], FloatArray]:
        """Local mode's ``search``: cosine (float32 rows · unit float64 query), argsort, mask."""
        query = np.array(vector)
        key = None
        if self._memo is not None:
            key = (query.tobytes(), limit, np.packbits(allowed).tobytes())
            if key in self._memo:
                return self._memo[key]
        norm = np.linalg.norm(query)
        query = query / np.where(norm != 0.0, norm, 1e-12)
        sims = np.dot(self._matrix64, query)
        order = np.argsort(sims)[::-1]
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


def _local_rows(store: InterestStore) -> list[str] | None:
    """Point ids in local mode's row order, or None (a server; a client without local mode).

    Reads qdrant-client's private ``QdrantLocal.collections[...].ids_inv``; only ever used to
    break exact ties the way local mode does, and checked by :func:`agreement`.
    """
    local = getattr(store.client, "_client", None)
    collection = getattr(local, "collections", {}).get(store.items_collection)
    ids_inv = getattr(collection, "ids_inv", None)
    return None if ids_inv is None else [str(p) for p in ids_inv]


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
    """Replay ``calls`` (recommend keyword arguments) for ``users`` through both paths."""
    total = same = 0
    worst = 0.0
    for user_id, user in users.items():
        for call in calls:
            request = plan(recommender, user, **call)
            if request is None:
                continue
            mine = engine.execute(request)
            real = recommender.recommend(user_id, **call).items
            total += 1
            if [i for i, _ in mine] == [r.item_id for r in real]:
                same += 1
                worst = max(
                    [worst, *(abs(a[1] - b.score) for a, b in zip(mine, real, strict=True))]
                )
    return {"queries": total, "identical": same, "max_abs_score_diff": worst}
