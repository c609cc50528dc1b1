"""Recommendations from a user's interest vectors: one Qdrant Query API call, fused server-side.

:meth:`Recommender.recommend` reads the user point (``users``), plans the request with
:mod:`models.query_plan` (the sources and their weights, the queries centred on the catalog, the
filter, the fusion formula and MMR: how a personal recommendation is scored is told there) and
then makes exactly one Query API request on ``items`` through the store, whichever backend runs
it (the embedded engine translates the request, a server receives it as it is).
:meth:`Recommender.plan` returns that request without running it. What this module adds is the
I/O around the plan: the user point, the catalog centroid the queries are centred on
(:func:`catalog_centroid`, one ``scroll``, cached per store), the catalog's largest popularity
that scales the prior (:func:`largest_value`, likewise), the collaborative vectors of the user's
engaged items (:meth:`Recommender.collab_query`, one retrieve), the answer with an
:class:`Explanation` of it, and the fallbacks.

With a server, needs Qdrant ≥ 1.15 (≥ 1.14 without diversity).

Fallbacks (never an exception for a user without vectors)
---------------------------------------------------------
An unknown user, one with nothing folded yet, or one lacking every requested dimension gets the
most popular items: ``OrderByQuery`` on the popularity field, descending, with the same filters
and exclusions (strategy ``fallback_popular``). Items without a numeric value there are skipped.
No popularity field, no item carrying it, or an engine refusing ``order_by`` (ordering needs a
range payload index on the field: the store creates one on ``popularity``; another field needs
``INTEREST_QDRANT_ITEM_PAYLOAD_INDEXES``) gives strategy ``fallback_empty``: no items and a note
saying why.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, TypedDict, Unpack

import numpy as np
from qdrant_client.http import models as qm

from models.collab import COLLAB, engaged_from_payload, user_query
from models.query_plan import (
    DEFAULT_DIMENSION_WEIGHTS,
    MAX_LIMIT,
    NEGATIVE,
    FilterValue,
    FloatArray,
    Source,
    attribute,
    build_filter,
    build_request,
    centered_queries,
    finite_weight,
    plan_sources,
)
from models.settings import DEFAULT_CENTERING as DEFAULT_CENTERING  # re-exported
from models.settings import DEFAULT_CENTROID_SAMPLE, RecommendSettings
from models.settings import DEFAULT_NEGATIVE_WEIGHT as DEFAULT_NEGATIVE_WEIGHT
from models.settings import DEFAULT_POPULARITY_FIELD as DEFAULT_POPULARITY_FIELD
from models.settings import DEFAULT_POPULARITY_WEIGHT as DEFAULT_POPULARITY_WEIGHT
from models.store import (
    ITEM_VECTOR,
    CollectionNotFound,
    InterestStore,
    StoreError,
    item_point_id,
    named_vectors,
)

Strategy = Literal["personal", "fallback_popular", "fallback_empty"]


class RecommendedItem(NamedTuple):
    """One result; unpacks as ``item_id, score, payload``."""

    item_id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why these items: contributing sources and weights, penalties, priors, exclusions."""

    sources: tuple[Source, ...] = ()
    negative_weight: float = 0.0  # 0.0 when the user has no negative vector or it is disabled
    popularity_field: str | None = None
    popularity_weight: float = 0.0
    diversity: float | None = None
    excluded: int = 0  # item ids excluded (recent items + exclude_items)
    filters: dict[str, Any] = field(default_factory=dict)
    missing: tuple[str, ...] = ()  # requested dimensions the user has no vector for
    item_sources: dict[str, str] = field(default_factory=dict)  # item → top contributing source
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the CLI and the HTTP API."""
        return {
            "sources": [
                {"vector": s.vector, "kind": s.kind, "label": s.label, "weight": round(s.weight, 4)}
                for s in self.sources
            ],
            "negative_weight": self.negative_weight,
            "popularity": (
                {"field": self.popularity_field, "weight": self.popularity_weight}
                if self.popularity_field
                else None
            ),
            "diversity": self.diversity,
            "excluded": self.excluded,
            "filters": dict(self.filters),
            "missing": list(self.missing),
            "item_sources": dict(self.item_sources),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The answer to one ``recommend`` call."""

    user_id: str
    strategy: Strategy
    items: tuple[RecommendedItem, ...]
    explanation: Explanation

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the CLI and the HTTP API."""
        return {
            "user_id": self.user_id,
            "strategy": self.strategy,
            "items": [
                {"item_id": i.item_id, "score": i.score, "payload": i.payload} for i in self.items
            ],
            "explanation": self.explanation.to_dict(),
        }


def _vectors(raw: Any) -> dict[str, FloatArray]:
    return {name: v.astype(np.float64) for name, v in named_vectors(raw).items()}


def _reason(exc: Exception) -> str:
    """One line from an engine's error."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RecommendOptions(TypedDict, total=False):
    """The per-call arguments of :meth:`Recommender.recommend` and :meth:`Recommender.plan`.

    Each one left out takes its default; the last three default to the recommender's
    :class:`RecommendSettings` (``INTEREST_RECOMMEND_*``).
    """

    dimensions: Sequence[str] | None
    """Dimensions to fuse (default: every one the user has)."""
    limit: int
    """How many items (1..MAX_LIMIT, default 10)."""
    filters: Mapping[str, FilterValue] | None
    """Payload filters: a value, or a list of values any of which may match."""
    exclude_recent: bool
    """Leave out the user's recent items (default True)."""
    exclude_items: Sequence[str]
    """More item ids to leave out."""
    diversity: float | None
    """MMR diversity in [0, 1] (default None: off)."""
    weights: Mapping[str, float] | None
    """Per-dimension weights over the recommender's."""
    popularity_field: str | None
    """Item payload field with the popularity prior (None: no prior)."""
    popularity_weight: float
    """Weight of ln(1 + popularity) in the score."""
    negative_weight: float
    """How strongly the negative dimension pushes items away."""


# What recommend reads about the catalog, per backend: {(what, items collection, ...): (monotonic
# time read, value)} — the centroid, the largest popularity, the items' vector names.
_CATALOG: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], tuple[float, Any]]]
_CATALOG = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Plan:
    """What :meth:`Recommender.recommend` will do for one user: the Query API request on the
    items collection (``request``), or ``None`` when it falls back to popular items."""

    request: qm.QueryRequest | None
    sources: tuple[Source, ...]
    queries: dict[str, FloatArray]  # the query vector per user vector (centred when on)
    query_filter: qm.Filter | None
    explanation: Explanation  # without results yet
    popularity_field: str | None  # as requested (the fallback orders by it)
    has_positive: bool
    limit: int  # as validated (the fallback returns as many)


class _CallOptions(NamedTuple):
    """The scalar options of one :meth:`Recommender.plan` call, validated and defaulted."""

    limit: int
    diversity: float | None
    popularity_field: str | None  # as requested (the fallback orders by it)
    negative_weight: float
    popularity_weight: float


def _excluded_items(payload: Mapping[str, Any], options: RecommendOptions) -> list[str]:
    """Item ids a call leaves out, each once in first-seen order: the user's recent items
    (unless ``exclude_recent`` is false) then ``exclude_items``."""
    recent = payload.get("recent_items") if options.get("exclude_recent", True) else None
    recent_ids = [str(i) for i in recent] if isinstance(recent, list) else []
    return list(dict.fromkeys([*recent_ids, *options.get("exclude_items", ())]))


def _fusion_note(
    centred: bool, centering: float, diversity: float | None, sources: Sequence[Source] = ()
) -> str:
    """The explanation's one-line account of how a personal request scores items."""
    note = "weighted fusion of the user's dimensions and interest clusters"
    if any(s.kind == "collab" for s in sources):
        note += " with the collaborative dimension"
    if centred:
        note += f" (queries centred on the catalog mean × {centering:g})"
    if diversity is not None:
        note += f"; MMR diversity {diversity:g} (scores are cosines to the fused query)"
    return note


def _with_collab(
    sources: Sequence[Source], collab: tuple[float, FloatArray] | None
) -> list[Source]:
    """The content ``sources`` (weights summing to 1) and the collaborative one on top with its
    own weight (1 when it is alone). Not renormalised together: where the collaborative signal
    is weak (little co-engagement yet, its item vectors short) the content part keeps its full
    scale next to the negative and popularity terms."""
    if collab is None:
        return list(sources)
    weight = collab[0] if sources else 1.0
    return [*sources, Source(vector=COLLAB, kind="collab", weight=weight)]


def largest_value(
    store: InterestStore, field: str, sample: int = DEFAULT_CENTROID_SAMPLE
) -> float | None:
    """The largest number ≥ 0 in the payload ``field`` of the first ``sample`` items in point-id
    order (a pseudo-random sample, as for the centroid: on a larger catalog, a high quantile),
    one ``scroll``; ``None`` when no item there has one."""
    try:
        records, _ = store.backend.scroll(
            store.items_collection, limit=sample, with_payload=[field], with_vectors=False
        )
    except CollectionNotFound:
        return None
    values = [
        float(v)
        for r in records
        if isinstance(v := (r.payload or {}).get(field), int | float)
        and not isinstance(v, bool)
        and math.isfinite(v)
        and v >= 0
    ]
    return max(values, default=None)


def catalog_centroid(
    store: InterestStore, sample: int = DEFAULT_CENTROID_SAMPLE
) -> FloatArray | None:
    """Mean unit item vector of the first ``sample`` items in point-id order (item ids are
    uuid5 hashes, so that is a pseudo-random sample); ``None`` without items or collection.
    One ``scroll``; the rows are averaged in id order, so the result does not depend on the
    order the engine returns them in."""
    rows = []
    for _, vec in sorted(store.sample_item_vectors(sample), key=lambda r: r[0]):
        norm = float(np.linalg.norm(vec))
        if norm > 0 and math.isfinite(norm):
            rows.append(vec.astype(np.float64) / norm)
    if not rows:
        return None
    centroid: FloatArray = np.mean(np.stack(rows), axis=0)
    return centroid


class Recommender:
    """Recommends items for users from their interest vectors (see the module doc)."""

    def __init__(
        self,
        store: InterestStore,
        *,
        weights: Mapping[str, float] | None = None,
        settings: RecommendSettings | None = None,
    ) -> None:
        """Over a store (either backend).

        ``settings`` (default: read from the environment / config file) give the fusion
        weights, the popularity prior and centering; ``weights`` override its
        ``dimension_weights`` per name for every call.
        """
        self.store = store
        self.items_collection = store.items_collection
        self.settings = settings if settings is not None else RecommendSettings()
        self.weights = {
            k: finite_weight(v, f"weight of {k!r}")
            for k, v in {**self.settings.dimension_weights, **(weights or {})}.items()
        }

    def _catalog(self, key: tuple[Any, ...], read: Callable[[], Any]) -> Any:
        """``read()`` cached for ``centroid_ttl_s`` per backend and ``key``, across instances."""
        per_client = _CATALOG.setdefault(self.store.backend, {})
        key = (*key, self.items_collection)
        now = time.monotonic()
        cached = per_client.get(key)
        if cached is not None and now - cached[0] < self.settings.centroid_ttl_s:
            return cached[1]
        value = read()
        per_client[key] = (now, value)
        return value

    def centroid(self) -> FloatArray | None:
        """The catalog centroid used for centering (cached for ``centroid_ttl_s`` per backend and
        items collection, across Recommender instances); ``None`` when centering is off."""
        if self.settings.centering <= 0:
            return None
        sample = self.settings.centroid_sample
        value: FloatArray | None = self._catalog(
            ("centroid", sample), lambda: catalog_centroid(self.store, sample)
        )
        return value

    def popularity_scale(self, popularity_field: str) -> float:
        """What the prior's ``ln(1 + popularity)`` is multiplied by: ``1 / ln(1 + the largest
        popularity in the catalog)`` when ``popularity_relative`` (:func:`largest_value`, cached
        like the centroid), so the prior is about [0, 1] on any catalog; 1.0 when off or when no
        item has one."""
        if not self.settings.popularity_relative:
            return 1.0
        sample = self.settings.centroid_sample
        top = self._catalog(
            ("popularity", popularity_field, sample),
            lambda: largest_value(self.store, popularity_field, sample),
        )
        return 1.0 / math.log1p(top) if top is not None and top > 0 else 1.0

    def collab_query(self, payload: Mapping[str, Any]) -> tuple[FloatArray, int] | None:
        """The user's collaborative query (:func:`models.collab.user_query` over the user's
        engaged items, one read of their ``collab`` vectors) and how many items it is made of;
        ``None`` without engaged items, or items without vectors, or no ``collab`` vectors."""
        entries = engaged_from_payload(payload)
        if not entries:
            return None
        names = self._catalog(("vectors",), self.store.item_vector_names)
        if COLLAB not in names:
            return None
        found = self.store.get_item_vectors([item for item, _, _ in entries], COLLAB)
        vectors = {item: v.astype(np.float64) for item, v in found.items()}
        query = user_query(entries, vectors, self.settings.collab_half_life_s)
        return None if query is None else (query, len(vectors))

    def plan(
        self,
        vectors: Mapping[str, FloatArray],
        payload: Mapping[str, Any],
        **options: Unpack[RecommendOptions],
    ) -> Plan:
        """The request :meth:`recommend` sends for a user with these stored ``vectors`` and
        ``payload`` (pure but for the cached catalog reads — centroid, largest popularity — and one
        read of the user's engaged items' collaborative vectors). Raises ``ValueError`` for
        invalid arguments."""
        call = self._checked_options(options)
        filters = options.get("filters")
        merged = {**self.weights, **(options.get("weights") or {})}
        dimensions = options.get("dimensions")
        content = None if dimensions is None else [d for d in dimensions if d != COLLAB]
        sources, missing = plan_sources(
            vectors, payload, dimensions=content, weights=merged
        )  # validates dimensions/weights even for unknown users
        collab = None
        if dimensions is None or COLLAB in dimensions:
            collab = self._collab_source(payload, merged)
            if collab is None and dimensions is not None:
                missing.append(COLLAB)
        sources = _with_collab(sources, collab)
        excluded = _excluded_items(payload, options)
        query_filter = build_filter(filters, sorted(item_point_id(i) for i in excluded))
        explanation = Explanation(
            excluded=len(excluded),
            filters=dict(filters or {}),
            missing=tuple(missing),
            diversity=None if call.diversity is None else float(call.diversity),
        )
        has_positive = any(name != NEGATIVE for name in vectors)
        if not sources:
            return Plan(
                None, (), {}, query_filter, explanation, call.popularity_field, has_positive,
                call.limit,
            )  # fmt: skip
        if collab is not None:
            vectors = {**vectors, COLLAB: collab[1]}
        return self._personal_plan(
            vectors, payload, sources, query_filter, explanation, call, has_positive
        )

    def _collab_source(
        self, payload: Mapping[str, Any], weights: Mapping[str, float]
    ) -> tuple[float, FloatArray] | None:
        """The collaborative source's raw weight and query, or ``None`` (weight 0, nothing)."""
        weight = weights.get(COLLAB, DEFAULT_DIMENSION_WEIGHTS[COLLAB])
        if not weight > 0:
            return None
        found = self.collab_query(payload)
        return None if found is None else (weight, found[0])

    def _checked_options(self, options: RecommendOptions) -> _CallOptions:
        """The scalar options of one call, checked in a fixed order (so the first mistake is the
        one reported) and defaulted from the settings; ``TypeError`` for an unknown option,
        ``ValueError`` for a bad value."""
        unknown = set(options) - set(RecommendOptions.__annotations__)
        if unknown:  # a caller's mistake, as for any unexpected keyword argument
            raise TypeError(f"unknown recommend options: {', '.join(sorted(unknown))}")
        cfg = self.settings
        limit = options.get("limit", 10)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit must be an integer in [1, {MAX_LIMIT}], got {limit!r}")
        diversity = options.get("diversity")
        if diversity is not None and not (
            isinstance(diversity, int | float) and 0.0 <= diversity <= 1.0
        ):
            raise ValueError(f"diversity must be in [0, 1], got {diversity!r}")
        popularity_field = options.get("popularity_field", cfg.popularity_field)
        negative_weight = finite_weight(
            options.get("negative_weight", cfg.negative_weight), "negative_weight"
        )
        popularity_weight = finite_weight(
            options.get("popularity_weight", cfg.popularity_weight), "popularity_weight"
        )
        return _CallOptions(limit, diversity, popularity_field, negative_weight, popularity_weight)

    def _personal_plan(
        self,
        vectors: Mapping[str, FloatArray],
        payload: Mapping[str, Any],
        sources: Sequence[Source],
        query_filter: qm.Filter | None,
        explanation: Explanation,
        call: _CallOptions,
        has_positive: bool,
    ) -> Plan:
        """The plan for a user with at least one source: the queries centred on the catalog, the
        fused request, and the explanation completed with what the request does."""
        cfg = self.settings
        centroid = self.centroid()
        content = {n: v for n, v in vectors.items() if n != COLLAB}
        queries = centered_queries(content, payload, centroid, cfg.centering)
        if COLLAB in vectors:
            queries[COLLAB] = vectors[COLLAB]
        use_pop = bool(call.popularity_field) and call.popularity_weight > 0
        scale = self.popularity_scale(str(call.popularity_field)) if use_pop else 1.0
        request = build_request(
            sources,
            queries,
            limit=call.limit,
            query_filter=query_filter,
            negative_weight=call.negative_weight,
            popularity_field=call.popularity_field if use_pop else None,
            popularity_weight=call.popularity_weight if use_pop else 0.0,
            diversity=call.diversity,
            popularity_scale=scale,
        )
        explanation = replace(
            explanation,
            sources=tuple(sources),
            negative_weight=call.negative_weight if NEGATIVE in vectors else 0.0,
            popularity_field=call.popularity_field if use_pop else None,
            popularity_weight=call.popularity_weight if use_pop else 0.0,
            note=_fusion_note(centroid is not None, cfg.centering, call.diversity, sources),
        )
        return Plan(
            request, tuple(sources), queries, query_filter, explanation, call.popularity_field,
            has_positive, call.limit,
        )  # fmt: skip

    def recommend(self, user_id: str, **options: Unpack[RecommendOptions]) -> Recommendation:
        """Top ``limit`` items for ``user_id``: personal when the user has vectors, else the
        documented fallback. Raises ``ValueError`` only for invalid arguments. The options
        (:class:`RecommendOptions`) default as documented there."""
        vectors, payload = self._load_user(user_id)
        plan = self.plan(vectors, payload, **options)
        if plan.request is None:
            return self._fallback(user_id, plan)
        try:
            points = self.store.query_items(plan.request)
        except CollectionNotFound:
            points = []
        items, item_sources = [], {}
        for point in points:
            body = dict(point.payload or {})
            item_id = str(body.get("item_id", point.id))
            items.append(RecommendedItem(item_id, float(point.score), body))
            top = attribute(_vectors(point.vector).get(ITEM_VECTOR), plan.sources, plan.queries)
            if top is not None:
                item_sources[item_id] = top
        if plan.explanation.diversity is None:
            # Engines order exact score ties arbitrarily (qdrant-edge differently on each call);
            # an answer that flips between calls looks broken, so ties go by item id.
            items.sort(key=lambda i: (-i.score, i.item_id))
        explanation = replace(plan.explanation, item_sources=item_sources)
        return Recommendation(user_id, "personal", tuple(items), explanation)

    def _load_user(self, user_id: str) -> tuple[dict[str, FloatArray], dict[str, Any]]:
        """The user's named vectors and payload; empty for an unknown user or missing collection."""
        stored = self.store.get_users([user_id]).get(user_id)
        if stored is None:
            return {}, {}
        vectors = {name: v.astype(np.float64) for name, v in stored.vectors.items()}
        return vectors, dict(stored.payload)

    def _fallback(self, user_id: str, plan: Plan) -> Recommendation:
        """Most popular items (one ``OrderByQuery``), or nothing with the reason in the note."""
        why = (
            "none of the requested dimensions has a vector yet"
            if plan.has_positive
            else "no interest vectors for this user yet"
        )
        popularity_field, limit = plan.popularity_field, plan.limit

        def answer(strategy: Strategy, items: list[RecommendedItem], note: str) -> Recommendation:
            field = popularity_field if strategy == "fallback_popular" else None
            expl = replace(plan.explanation, popularity_field=field, note=note)
            return Recommendation(user_id, strategy, tuple(items), expl)

        if not popularity_field:
            return answer("fallback_empty", [], f"{why}; no popularity field configured")
        order = qm.OrderBy(key=popularity_field, direction=qm.Direction.DESC)
        request = qm.QueryRequest(
            query=qm.OrderByQuery(order_by=order),
            filter=plan.query_filter,
            limit=2 * limit,  # a list-valued field may return a point once per value
            with_payload=True,
        )
        try:
            points = self.store.query_items(request)
        except (StoreError, ValueError, RuntimeError) as exc:  # the engine's refusal, one line
            reason = _reason(exc)
            return answer("fallback_empty", [], f"{why}; popular items unavailable ({reason})")
        items: dict[str, RecommendedItem] = {}
        for point in points:
            body = dict(point.payload or {})
            value = body.get(popularity_field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            item_id = str(body.get("item_id", point.id))
            items.setdefault(item_id, RecommendedItem(item_id, float(value), body))
        ranked = sorted(items.values(), key=lambda i: (-i.score, i.item_id))[:limit]
        if not ranked:
            return answer("fallback_empty", [], f"{why}; no item has {popularity_field!r}")
        note = f"{why}; most popular items by {popularity_field!r}"
        extra = self._top_up(plan, {i.item_id for i in ranked}, limit - len(ranked))
        if extra:
            note += f", then {len(extra)} without a value for it (catalog order, score 0)"
        return answer("fallback_popular", [*ranked, *extra], note)

    def _top_up(self, plan: Plan, have: set[str], missing: int) -> list[RecommendedItem]:
        """Up to ``missing`` more items that pass the plan's filter and are not in ``have``, in
        point-id order, score 0.0: a cold user asking for 40 gets 40 when the catalog has
        them, not only the items that have a popularity value yet (one ``scroll``)."""
        if missing <= 0:
            return []
        try:
            records, _ = self.store.backend.scroll(
                self.store.items_collection, limit=missing + len(have),
                query_filter=plan.query_filter, with_payload=True, with_vectors=False,
            )  # fmt: skip
        except (StoreError, ValueError, RuntimeError):  # the popular part still answers
            return []
        out: list[RecommendedItem] = []
        for record in records:
            body = dict(record.payload or {})
            item_id = str(body.get("item_id", record.id))
            if item_id not in have and len(out) < missing:
                have.add(item_id)
                out.append(RecommendedItem(item_id, 0.0, body))
        return out
