"""Qdrant's REST data model (qdrant-client's ``models``) translated into qdrant-edge's classes.

The recommend plan (:mod:`models.query_plan`) and the read-only REST endpoints of the service
(:mod:`streams.embed.qdrant_rest`) both speak the server's model; this module is the one place that
turns it into the in-process engine's objects, so no request is written twice. What the engine
cannot do (``lookup_from`` another collection, inference objects, sparse vectors ...) raises
:class:`~models.store.base.UnsupportedRequest` naming the feature, never a silent approximation.

Only the translation lives here: no shard, no I/O. Queries that name a point instead of a vector
(``{"nearest": "<point id>"}``) need that point's vector: the caller passes ``vector_of``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any, cast

import numpy as np
import qdrant_edge as qe
from qdrant_client.http import models as qm

from models.store.base import UnsupportedRequest

__all__ = ["UnsupportedRequest", "VectorOf", "point_id", "query_request"]

VectorOf = Callable[[qm.ExtendedPointId, str | None], list[float]]
"""``vector_of(point_id, using)``: the stored vector of a point, for queries by point id."""

DEFAULT_LIMIT = 10  # the server's default for a query and a prefetch without one


def point_id(raw: qm.ExtendedPointId) -> int | uuid.UUID:
    """A point id as the engine takes it: an int, or a UUID (strings must be UUIDs, as on a
    server)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    try:
        return raw if isinstance(raw, uuid.UUID) else uuid.UUID(str(raw))
    except ValueError:
        raise UnsupportedRequest(
            f"point id {raw!r} is neither an unsigned integer nor a UUID"
        ) from None


def filter_(f: qm.Filter | None) -> qe.Filter | None:
    """A payload filter; ``None`` stays ``None``."""
    if f is None:
        return None

    def many(conds: Any) -> list[Any] | None:
        if conds is None:
            return None
        return [condition(c) for c in (conds if isinstance(conds, list) else [conds])]

    min_should = None
    if f.min_should is not None:
        min_should = qe.MinShould(
            [condition(c) for c in f.min_should.conditions], f.min_should.min_count
        )
    return qe.Filter(
        must=many(f.must), should=many(f.should), must_not=many(f.must_not), min_should=min_should
    )


def condition(c: qm.Condition) -> Any:
    """One filter condition (any kind qdrant-client can express but slices)."""
    if isinstance(c, qm.Filter):
        return filter_(c)
    if isinstance(c, qm.FieldCondition):
        return _field_condition(c)
    if isinstance(c, qm.HasIdCondition):
        return qe.HasIdCondition({point_id(i) for i in c.has_id})
    if isinstance(c, qm.IsEmptyCondition):
        return qe.IsEmptyCondition(c.is_empty.key)
    if isinstance(c, qm.IsNullCondition):
        return qe.IsNullCondition(c.is_null.key)
    if isinstance(c, qm.HasVectorCondition):
        return qe.HasVectorCondition(c.has_vector)
    if isinstance(c, qm.NestedCondition):
        return qe.NestedCondition(c.nested.key, filter_(c.nested.filter) or qe.Filter())
    raise UnsupportedRequest(f"filter condition {type(c).__name__} is not supported here")


def _field_condition(c: qm.FieldCondition) -> qe.FieldCondition:
    if c.geo_bounding_box is not None or c.geo_radius is not None or c.geo_polygon is not None:
        raise UnsupportedRequest("geo filter conditions are not supported here")
    values_count = None
    if c.values_count is not None:
        vc = c.values_count
        values_count = qe.ValuesCount(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte)
    return qe.FieldCondition(
        c.key,
        match=None if c.match is None else _match(c.match),
        range=None if c.range is None else _range(c.range),
        values_count=values_count,
        is_empty=c.is_empty,
        is_null=c.is_null,
    )


def _match(m: qm.Match) -> Any:
    if isinstance(m, qm.MatchValue):
        if isinstance(m.value, bool):
            # qdrant-edge 0.9 reads a Python bool as the integer 0/1 (bool is an int), which no
            # boolean payload value matches; numpy's bool is not an int, so it stays a bool.
            return qe.MatchValue(np.bool_(m.value))  # type: ignore[arg-type]
        return qe.MatchValue(m.value)
    if isinstance(m, qm.MatchAny):
        return qe.MatchAny(list(m.any))  # type: ignore[arg-type]
    if isinstance(m, qm.MatchExcept):
        return qe.MatchExcept(list(m.except_))  # type: ignore[arg-type]
    if isinstance(m, qm.MatchText):
        return qe.MatchText(m.text)
    if isinstance(m, qm.MatchTextAny):
        return qe.MatchTextAny(m.text_any)
    if isinstance(m, qm.MatchPhrase):
        return qe.MatchPhrase(m.phrase)
    if isinstance(m, qm.MatchPrefix):
        return qe.MatchPrefix(m.prefix)
    if isinstance(m, qm.MatchSubstring):
        return qe.MatchSubstring(m.substring)
    raise UnsupportedRequest(f"match {type(m).__name__} is not supported here")


def _range(r: qm.Range | qm.DatetimeRange) -> Any:
    if isinstance(r, qm.DatetimeRange):

        def text(v: datetime | date | None) -> str | None:
            return None if v is None else v.isoformat()

        return qe.RangeDateTime(gte=text(r.gte), gt=text(r.gt), lte=text(r.lte), lt=text(r.lt))
    return qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)


def expression(e: qm.Expression) -> qe.Expression:
    """A formula expression tree (score boosting)."""
    if isinstance(e, bool):
        raise UnsupportedRequest("a formula term must be a number, a variable or an expression")
    if isinstance(e, int | float):
        return qe.Expression.Constant(float(e))
    if isinstance(e, str):
        return qe.Expression.Variable(e)
    if isinstance(e, qm.Filter | qm.FieldCondition | qm.HasIdCondition | qm.IsEmptyCondition):
        return qe.Expression.Condition(condition(e))
    if isinstance(e, qm.IsNullCondition | qm.HasVectorCondition | qm.NestedCondition):
        return qe.Expression.Condition(condition(e))
    simple: dict[type, tuple[str, Callable[..., qe.Expression]]] = {
        qm.NegExpression: ("neg", qe.Expression.Neg),
        qm.AbsExpression: ("abs", qe.Expression.Abs),
        qm.SqrtExpression: ("sqrt", qe.Expression.Sqrt),
        qm.ExpExpression: ("exp", qe.Expression.Exp),
        qm.Log10Expression: ("log10", qe.Expression.Log10),
        qm.LnExpression: ("ln", qe.Expression.Ln),
        qm.AcoshExpression: ("acosh", qe.Expression.Acosh),
    }
    lists: dict[type, tuple[str, Callable[..., qe.Expression]]] = {
        qm.MultExpression: ("mult", qe.Expression.Mult),
        qm.SumExpression: ("sum", qe.Expression.Sum),
        qm.MaxExpression: ("max", qe.Expression.Max),
        qm.MinExpression: ("min", qe.Expression.Min),
    }
    if type(e) in simple:
        attr, make = simple[type(e)]
        return make(expression(getattr(e, attr)))
    if type(e) in lists:
        attr, make = lists[type(e)]
        return make([expression(x) for x in getattr(e, attr)])
    if isinstance(e, qm.DivExpression):
        d = e.div
        return qe.Expression.Div(expression(d.left), expression(d.right), d.by_zero_default)
    if isinstance(e, qm.PowExpression):
        return qe.Expression.Pow(expression(e.pow.base), expression(e.pow.exponent))
    if isinstance(e, qm.DatetimeExpression):
        return qe.Expression.Datetime(e.datetime)
    if isinstance(e, qm.DatetimeKeyExpression):
        return qe.Expression.DatetimeKey(e.datetime_key)
    if isinstance(e, qm.GeoDistance):
        origin = qe.GeoPoint(e.geo_distance.origin.lon, e.geo_distance.origin.lat)
        return qe.Expression.GeoDistance(origin, e.geo_distance.to)
    decays: dict[type, tuple[str, qe.DecayKind]] = {
        qm.LinDecayExpression: ("lin_decay", qe.DecayKind.Lin),
        qm.ExpDecayExpression: ("exp_decay", qe.DecayKind.Exp),
        qm.GaussDecayExpression: ("gauss_decay", qe.DecayKind.Gauss),
    }
    if type(e) in decays:
        attr, kind = decays[type(e)]
        p = getattr(e, attr)
        target = None if p.target is None else expression(p.target)
        return qe.Expression.Decay(kind, expression(p.x), target, p.midpoint, p.scale)
    raise UnsupportedRequest(f"formula expression {type(e).__name__} is not supported here")


def _vector(raw: Any, using: str | None, vector_of: VectorOf) -> list[float]:
    """A dense query vector, or the stored vector of the point it names."""
    if isinstance(raw, list) and (not raw or not isinstance(raw[0], list)):
        return [float(x) for x in raw]
    if isinstance(raw, int | str | uuid.UUID) and not isinstance(raw, bool):
        return vector_of(raw, using)
    raise UnsupportedRequest(
        f"query input {type(raw).__name__} is not supported here (dense vectors and point ids)"
    )


def query(q: Any, using: str | None, vector_of: VectorOf, limit: int = DEFAULT_LIMIT) -> Any:
    """A scoring query: ``QueryInterface`` (a vector, a point id or a ``*Query``); ``limit`` is
    the limit of the request or prefetch it belongs to (MMR's default candidates limit)."""
    if q is None:
        return None
    if isinstance(q, qm.NearestQuery):
        vector = _vector(q.nearest, using, vector_of)
        if q.mmr is None:
            return qe.Query.Nearest(vector, using=using)
        diversity = 0.5 if q.mmr.diversity is None else q.mmr.diversity
        # As on a server (and in qdrant-client's local mode): without a candidates limit, MMR
        # picks from as many nearest points as the request's limit.
        candidates = limit if q.mmr.candidates_limit is None else q.mmr.candidates_limit
        # The server's ``diversity`` is 1 − MMR's lambda (0: pure relevance, 1: most diverse).
        return qe.Mmr(vector, 1.0 - diversity, candidates, using=using)
    if isinstance(q, qm.FormulaQuery):
        return qe.Formula(expression(q.formula), defaults=q.defaults)
    if isinstance(q, qm.OrderByQuery):
        order = q.order_by if isinstance(q.order_by, qm.OrderBy) else qm.OrderBy(key=q.order_by)
        direction = None
        if order.direction is not None:
            direction = (
                qe.Direction.Desc if order.direction == qm.Direction.DESC else qe.Direction.Asc
            )
        raw = order.start_from
        start = raw.isoformat() if isinstance(raw, datetime | date) else raw
        return qe.OrderBy(order.key, direction=direction, start_from=start)
    if isinstance(q, qm.FusionQuery):
        return qe.Fusion.Dbsf() if q.fusion == qm.Fusion.DBSF else qe.Fusion.Rrf(k=2)
    if isinstance(q, qm.RrfQuery):
        k = 2 if q.rrf.k is None else q.rrf.k
        return qe.Fusion.Rrf(k=k, weights=q.rrf.weights)
    if isinstance(q, qm.SampleQuery):
        return qe.Sample.Random
    if isinstance(q, qm.RecommendQuery):
        return _recommend(q.recommend, using, vector_of)
    if isinstance(q, qm.Query.__args__):  # type: ignore[attr-defined]
        raise UnsupportedRequest(f"query {type(q).__name__} is not supported here")
    return qe.Query.Nearest(_vector(q, using, vector_of), using=using)


def _recommend(r: qm.RecommendInput, using: str | None, vector_of: VectorOf) -> qe.Query:
    positives = [_vector(v, using, vector_of) for v in r.positive or []]
    negatives = [_vector(v, using, vector_of) for v in r.negative or []]
    # (``qe.NamedVector`` exists in the stubs only: no runtime ``list[qe.NamedVector](...)``.)
    inner = qe.RecommendQuery(cast(Any, positives), cast(Any, negatives))
    if r.strategy == qm.RecommendStrategy.SUM_SCORES:
        return qe.Query.RecommendSumScores(inner, using=using)
    if r.strategy in (None, qm.RecommendStrategy.AVERAGE_VECTOR):
        # The server's default: one query vector, avg(positives) + avg(positives) − avg(negatives).
        return qe.Query.Nearest(_average_vector(positives, negatives), using=using)
    return qe.Query.RecommendBestScore(inner, using=using)


def _average_vector(positives: list[list[float]], negatives: list[list[float]]) -> list[float]:
    if not positives:
        raise UnsupportedRequest("a recommend query needs at least one positive example")
    n = len(positives[0])
    pos = [sum(v[i] for v in positives) / len(positives) for i in range(n)]
    if not negatives:
        return pos
    neg = [sum(v[i] for v in negatives) / len(negatives) for i in range(n)]
    return [p + p - m for p, m in zip(pos, neg, strict=True)]


def search_params(p: qm.SearchParams | None) -> qe.SearchParams | None:
    if p is None:
        return None
    quantization = None
    if p.quantization is not None:
        qp = p.quantization
        quantization = qe.QuantizationSearchParams(
            ignore=bool(qp.ignore), rescore=qp.rescore, oversampling=qp.oversampling
        )
    return qe.SearchParams(
        hnsw_ef=p.hnsw_ef,
        exact=bool(p.exact),
        quantization=quantization,
        indexed_only=bool(p.indexed_only),
    )


def with_payload(w: Any) -> Any:
    """``with_payload``: a bool, a list of keys, or an include/exclude selector."""
    if w is None:
        return False
    if isinstance(w, bool):
        return w
    if isinstance(w, qm.PayloadSelectorInclude):
        return qe.PayloadSelector.Include(list(w.include))
    if isinstance(w, qm.PayloadSelectorExclude):
        return qe.PayloadSelector.Exclude(list(w.exclude))
    return [str(k) for k in w]


def with_vector(w: Any) -> bool | list[str]:
    if w is None:
        return False
    return w if isinstance(w, bool) else [str(k) for k in w]


def prefetch(p: qm.Prefetch, vector_of: VectorOf) -> qe.Prefetch:
    if p.lookup_from is not None:
        raise UnsupportedRequest("lookup_from is not supported here")
    nested = p.prefetch if isinstance(p.prefetch, list) else [p.prefetch] if p.prefetch else []
    limit = DEFAULT_LIMIT if p.limit is None else p.limit
    return qe.Prefetch(
        limit=limit,
        query=query(p.query, p.using, vector_of, limit),
        prefetches=[prefetch(n, vector_of) for n in nested],
        params=search_params(p.params),
        filter=filter_(p.filter),
        score_threshold=p.score_threshold,
    )


def query_request(r: qm.QueryRequest, vector_of: VectorOf) -> qe.QueryRequest:
    """A whole ``POST /points/query`` body."""
    if r.lookup_from is not None:
        raise UnsupportedRequest("lookup_from is not supported here")
    if r.shard_key is not None:
        raise UnsupportedRequest("shard keys are not supported here")
    nested = r.prefetch if isinstance(r.prefetch, list) else [r.prefetch] if r.prefetch else []
    limit = DEFAULT_LIMIT if r.limit is None else r.limit
    return qe.QueryRequest(
        limit=limit,
        offset=r.offset,
        query=query(r.query, r.using, vector_of, limit),
        prefetches=[prefetch(p, vector_of) for p in nested],
        with_vector=with_vector(r.with_vector),
        with_payload=with_payload(r.with_payload),
        filter=filter_(r.filter),
        score_threshold=r.score_threshold,
        params=search_params(r.params),
    )


def ids(raw: Sequence[qm.ExtendedPointId]) -> list[qe.PointId]:
    return [point_id(i) for i in raw]
