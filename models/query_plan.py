"""The exact request a recommendation sends to Qdrant, planned from a user's stored point.

Pure: no I/O and no client, only arithmetic on the user's vectors and payload and the
``qdrant_client.http.models`` objects that make up the request. It is apart from
:mod:`models.recommend` (which reads the user point, the catalog centroid and runs the request)
so that the request can be tested without Qdrant, and so that the offline evaluation's numpy
scorer (:mod:`bench.eval.engine`) answers the very request ``recommend`` would send.

How a personal recommendation is scored
---------------------------------------
The user point's named vectors become *sources* (:func:`plan_sources`):

- the plain dimensions (``short_term``, ``long_term``, ``search``, or any configured one), weighted
  by :data:`DEFAULT_DIMENSION_WEIGHTS` (short_term > search > long_term; unknown names 1.0);
- the interest clusters ``interest_<k>``, which share ``interests`` (default 1.0) in proportion to
  the cluster weights the embed worker stored in ``payload.state.interests[*].weight``.

Raw weights are normalised to sum to 1, so a score is a weighted mean of cosines. Each source's
query is its decayed mean centred on the catalog (:func:`centered_queries`: the stored direction
× ``norm/mass``, minus ``centering`` × the mean item vector,
:func:`~models.recommend.catalog_centroid`), because sentence embeddings share a large common
component that otherwise dominates every cosine. Then one ``query_points`` on ``items``
(:func:`build_request`): a prefetch per source gathers candidates (``C`` nearest each), a nested
prefetch rescores their union by cosine with ``Q = Σ w_i q_i``, one more prefetch retrieves items
near the ``negative`` vector, and a :class:`~qdrant_client.models.FormulaQuery` ("score
boosting", Qdrant ≥ 1.14, :func:`build_formula`) rescores server-side::

    score = |Q|·$score[Q]  +  w_c·$score[C]  −  w_neg·max($score[neg], 0)
            +  w_pop·ln(1 + popularity)/ln(1 + p_max)

``$score[C]`` is the collaborative dimension (:mod:`models.collab`): the user's query in the
items' ``collab`` vectors (a Dot-product named vector) scoring the same union, with its weight
``w_c`` on top of the content weights (:func:`_with_collab`). ``p_max`` is the catalog's largest
popularity (``Recommender.popularity_scale``), so the prior is in [0, 1] on any catalog.

``|Q|·cos(item, Q) = Σ_i w_i·cos(item, q_i)``: every candidate gets the full weighted sum, while
candidates still come only from items strongly relevant to at least one dimension or cluster
(``C = max(100, 5·limit)`` per source). That is deliberate multi-interest retrieval: ranking the
whole catalog by the weighted sum would favour bland items halfway between a user's distinct
interests. With a single source there is no nesting (``$score[0]`` is its cosine, weight 1).
The weights, ``w_neg``, ``w_pop``, the popularity field and the centering come from
:class:`~models.settings.RecommendSettings` (``INTEREST_RECOMMEND_*``) unless a call overrides
them; the defaults were chosen on the MovieLens validation split (bench/README.md).

The negative term only punishes items close to what the user disliked (``max(…, 0)``): it is
evidence, not an anti-query. The prior applies only where the popularity field holds one number
≥ 0: a condition factor comes first in its product, and a product stops at its first 0 in core
and local mode alike, so a missing, negative, list or string value adds nothing instead of
failing (local mode raises on a non-number where core would read 0).

Why a formula and not RRF/DBSF: qdrant-client 1.20's local mode implements all three, mirroring
core (``local/local_collection.py::_merge_sources``: ``FusionQuery`` RRF/DBSF, weighted
``RrfQuery``; ``FormulaQuery`` via ``hybrid/formula.py``). But rank fusion throws away the
similarity magnitudes and cannot subtract negative evidence or add a payload prior, and DBSF
has no weights. Only the formula is a real weighted linear fusion with a negative term and a
popularity prior in the same single call.

Diversity (MMR, Qdrant ≥ 1.15): with ``diversity`` set, the formula stage becomes a nested
prefetch (its top ``C``) and the outer query is ``NearestQuery(mmr=Mmr(diversity, C))``, still
one call; local mode runs MMR over prefetch results (``_search_with_mmr``). MMR needs one query
vector for relevance; we pass ``Σ w_i v_i − w_neg v_neg`` (normalised, :func:`mmr_vector`): over
the retrieved pool its cosine ranks like the weighted sum of all the sources' cosines, so under
diversity the final scores are cosines to that vector and the popularity prior only shapes which
candidates MMR picks from.

Also here: the payload filter with the excluded items (:func:`build_filter`,
:func:`parse_filter_args` for command lines) and which source an item owes most to
(:func:`attribute`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
from qdrant_client.http import models as qm

from models.clusters import VECTOR_PREFIX
from models.collab import COLLAB
from models.store import ITEM_VECTOR

NEGATIVE: Final = "negative"
INTERESTS: Final = "interests"
"""Pseudo-dimension naming all interest clusters at once (in ``dimensions`` and ``weights``)."""

DEFAULT_DIMENSION_WEIGHTS: Final[Mapping[str, float]] = {
    "short_term": 1.0,  # what the user is into right now leads
    "search": 0.8,  # explicit intent, fresher than taste
    "long_term": 0.6,  # stable taste keeps results from swinging with every click
    INTERESTS: 1.0,  # shared by the clusters in proportion to their stored weights
    COLLAB: 8.0,  # what users who engaged with the same items engaged with (vs the sum above)
}
UNKNOWN_DIMENSION_WEIGHT: Final = 1.0
MIN_CANDIDATES: Final = 100
MAX_LIMIT: Final = 1000

FilterScalar = str | int | float | bool
FilterValue = FilterScalar | Sequence[str] | Sequence[int]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Source:
    """One positive prefetch: a user vector and its share of the score (weights sum to 1)."""

    vector: str
    kind: Literal["dimension", "interest", "collab"]
    weight: float
    label: str | None = None

    @property
    def name(self) -> str:
        """What a person reads: the cluster label, else the vector name."""
        return self.label or self.vector


def finite_weight(value: Any, what: str) -> float:
    """``value`` as a float; ``ValueError`` unless it is a finite number ≥ 0 (``what`` names it)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be ≥ 0, got {value!r}")
    return float(value)


def cluster_info(payload: Mapping[str, Any]) -> dict[str, tuple[float | None, str | None]]:
    """``{"interest_<k>": (weight, label)}`` from ``payload.state.interests``; malformed entries
    are skipped (a damaged payload degrades to equal cluster shares, never to an error)."""
    state = payload.get("state")
    slots = state.get("interests") if isinstance(state, Mapping) else None
    out: dict[str, tuple[float | None, str | None]] = {}
    if not isinstance(slots, list):
        return out
    for slot in slots:
        if not isinstance(slot, Mapping):
            continue
        index = slot.get("slot")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            continue
        weight = slot.get("weight")
        w: float | None = None
        if isinstance(weight, int | float) and not isinstance(weight, bool):
            w = float(weight) if math.isfinite(weight) and weight >= 0 else None
        label = slot.get("label")
        out[f"{VECTOR_PREFIX}{index}"] = (w, label if isinstance(label, str) else None)
    return out


def plan_sources(
    vector_names: Iterable[str],
    payload: Mapping[str, Any],
    *,
    dimensions: Sequence[str] | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[list[Source], list[str]]:
    """Positive sources with normalised weights, and the requested names the user lacks.

    ``dimensions``: vector names, ``"interests"`` (every cluster) or ``None`` (every positive
    vector the user has). ``weights`` override :data:`DEFAULT_DIMENSION_WEIGHTS` per name;
    ``"interests"`` is the clusters' total, ``"interest_<k>"`` sets one cluster's raw weight.
    Sources whose weight comes out 0 get no prefetch.
    """
    have = [n for n in vector_names if n != NEGATIVE]
    table = _weight_table(weights)
    wanted, missing = _wanted_vectors(have, dimensions)
    clusters = cluster_info(payload)
    shares = _cluster_shares(have, clusters)
    raw: list[tuple[str, float]] = []
    for name in wanted:
        if name.startswith(VECTOR_PREFIX):
            w = table[name] if name in table else table.get(INTERESTS, 1.0) * shares[name]
        else:
            w = table.get(name, UNKNOWN_DIMENSION_WEIGHT)
        if w > 0:
            raw.append((name, w))
    return _normalised_sources(raw, clusters), missing


def _weight_table(weights: Mapping[str, float] | None) -> dict[str, float]:
    """:data:`DEFAULT_DIMENSION_WEIGHTS` with a call's overrides, each checked to be a finite
    number ≥ 0 (checked before anything else, so a bad weight is reported even for a user
    without vectors)."""
    table = {**DEFAULT_DIMENSION_WEIGHTS}
    for key, value in (weights or {}).items():
        table[key] = finite_weight(value, f"weight of {key!r}")
    return table


def _wanted_vectors(
    have: Sequence[str], dimensions: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The user's vectors a call asks for (first mention first, each once) and the requested
    names the user has no vector for. ``"interests"`` expands to every cluster the user has;
    ``"negative"`` is refused: it is evidence against items, never a source."""
    if dimensions is None:
        return list(have), []
    if NEGATIVE in dimensions:
        raise ValueError(
            "'negative' is negative evidence, not a source; tune it with negative_weight"
        )
    wanted: list[str] = []
    missing: list[str] = []
    for name in dict.fromkeys(dimensions):
        if name == INTERESTS:
            hits = [n for n in have if n.startswith(VECTOR_PREFIX)]
            wanted += hits
            missing += [] if hits else [name]
        elif name in have:
            wanted.append(name)
        else:
            missing.append(name)
    return list(dict.fromkeys(wanted)), missing


def _cluster_shares(
    have: Sequence[str], clusters: Mapping[str, tuple[float | None, str | None]]
) -> dict[str, float]:
    """Each of the user's interest clusters' share of the ``interests`` weight: in proportion to
    the weights the embed worker stored, or equal shares when none is usable (a planted or
    damaged point)."""
    slot_names = [n for n in have if n.startswith(VECTOR_PREFIX)]
    stored = {n: clusters.get(n, (None, None))[0] for n in slot_names}
    if any(w for w in stored.values()):
        total = sum(w or 0.0 for w in stored.values())
        return {n: (w or 0.0) / total for n, w in stored.items()}
    return {n: 1.0 / len(slot_names) for n in slot_names}


def _normalised_sources(
    raw: Sequence[tuple[str, float]], clusters: Mapping[str, tuple[float | None, str | None]]
) -> list[Source]:
    """``(vector name, raw weight > 0)`` pairs as sources whose weights sum to 1, interest
    clusters labelled from the payload; a share that underflows to 0 is dropped."""
    total = sum(w for _, w in raw)
    kept = [(name, w) for name, w in raw if w / total > 0]  # a denormal share underflows to 0
    return [
        Source(
            vector=name,
            kind="interest" if name.startswith(VECTOR_PREFIX) else "dimension",
            weight=w / total,
            label=clusters.get(name, (None, None))[1] if name.startswith(VECTOR_PREFIX) else None,
        )
        for name, w in kept
    ]


def mean_lengths(payload: Mapping[str, Any]) -> dict[str, float]:
    """``{vector name: |mean|}`` from the stored state: ``norm / mass`` of each dimension and
    interest slot, in (0, 1] — 1 when every event pointed the same way, small for a diffuse one.
    Malformed or missing entries are left out (callers take 1.0)."""
    state = payload.get("state")
    if not isinstance(state, Mapping):
        return {}
    out: dict[str, float] = {}

    def ratio(entry: Any) -> float | None:
        if not isinstance(entry, Mapping):
            return None
        mass, norm = entry.get("mass"), entry.get("norm")
        if isinstance(mass, bool) or not isinstance(mass, int | float):
            return None
        if isinstance(norm, bool) or not isinstance(norm, int | float):
            return None
        if not (math.isfinite(mass) and math.isfinite(norm)) or mass <= 0 or norm <= 0:
            return None
        return min(1.0, float(norm) / float(mass))

    dims = state.get("dimensions")
    if isinstance(dims, Mapping):
        for name, entry in dims.items():
            r = ratio(entry)
            if r is not None:
                out[str(name)] = r
    slots = state.get("interests")
    if isinstance(slots, list):
        for entry in slots:
            index = entry.get("slot") if isinstance(entry, Mapping) else None
            r = ratio(entry)
            if isinstance(index, int) and not isinstance(index, bool) and r is not None:
                out[f"{VECTOR_PREFIX}{index}"] = r
    return out


def centered_queries(
    vectors: Mapping[str, FloatArray],
    payload: Mapping[str, Any],
    centroid: FloatArray | None,
    strength: float,
) -> dict[str, FloatArray]:
    """The query vector per user vector: the user's mean minus ``strength`` × the catalog's mean
    item vector, as a unit vector (the stored direction itself when centering is off).

    Sentence embeddings are anisotropic: every text shares a large common component (for
    all-MiniLM-L6-v2 the MovieLens titles' mean vector has length 0.54), so raw cosines mostly say
    "this is a movie title" and rank bland, central items first. Subtracting the centroid leaves
    the part of the user's interest that sets it apart from the catalog. The stored vector is the
    *direction* of the decayed mean; its length ``norm / mass`` (payload) restores the mean itself,
    so a diffuse interest is centred as much as a sharp one. Qdrant's cosine normalises the query,
    so items are ranked by ``item · (mean − strength·centroid)``.
    """
    if centroid is None or strength <= 0:
        return {name: np.asarray(v, dtype=np.float64) for name, v in vectors.items()}
    lengths = mean_lengths(payload)
    out: dict[str, FloatArray] = {}
    for name, vec in vectors.items():
        unit = np.asarray(vec, dtype=np.float64)
        norm = float(np.linalg.norm(unit))
        if norm <= 1e-12:
            out[name] = unit
            continue
        query = (unit / norm) * lengths.get(name, 1.0) - strength * centroid
        qnorm = float(np.linalg.norm(query))
        out[name] = query / qnorm if qnorm > 1e-6 else unit / norm
    return out


def build_filter(
    filters: Mapping[str, FilterValue] | None, exclude_point_ids: Sequence[str] = ()
) -> qm.Filter | None:
    """Payload filters (all must hold) plus excluded item points; ``None`` when there are none.

    A scalar matches exactly (a float as a one-point range); a list matches any of its values
    (all strings or all ints).
    """
    must: list[qm.Condition] = []
    for key, value in (filters or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"filter key must be a non-empty string, got {key!r}")
        if isinstance(value, bool | int | str):
            must.append(qm.FieldCondition(key=key, match=qm.MatchValue(value=value)))
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"filter {key}: value must be finite, got {value!r}")
            must.append(qm.FieldCondition(key=key, range=qm.Range(gte=value, lte=value)))
        elif isinstance(value, Sequence) and value:
            values = list(value)
            if all(isinstance(v, str) for v in values):
                any_str = [str(v) for v in values]
                must.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=any_str)))
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                any_int = [v for v in values if isinstance(v, int)]
                must.append(qm.FieldCondition(key=key, match=qm.MatchAny(any=any_int)))
            else:
                raise ValueError(f"filter {key}: a list must be all strings or all integers")
        else:
            raise ValueError(f"filter {key}: unsupported value {value!r}")
    must_not: list[qm.Condition] = []
    if exclude_point_ids:
        must_not.append(qm.HasIdCondition(has_id=list(exclude_point_ids)))
    if not must and not must_not:
        return None
    return qm.Filter(must=must or None, must_not=must_not or None)


def parse_filter_args(pairs: Iterable[str]) -> dict[str, FilterValue]:
    """``["category=ml", "tags=a,b", "year=2024"]`` → filters for ``Recommender.recommend``.

    For command lines: ``true``/``false`` become booleans, integers become ints, a comma makes a
    list (match any); anything else stays a string. Repeating a key is an error.

    >>> parse_filter_args(["category=ml", "tags=a,b", "year=2024", "new=true"])
    {'category': 'ml', 'tags': ['a', 'b'], 'year': 2024, 'new': True}
    """

    def scalar(text: str) -> str | int | bool:
        if text in ("true", "false"):
            return text == "true"
        try:
            return int(text)
        except ValueError:
            return text

    out: dict[str, FilterValue] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"filter {pair!r}: expected KEY=VALUE")
        if key in out:
            raise ValueError(f"filter key {key!r} given twice; use KEY=a,b to match any of several")
        if "," in value:
            parts = [scalar(p.strip()) for p in value.split(",") if p.strip()]
            if all(isinstance(p, int) and not isinstance(p, bool) for p in parts):
                out[key] = [int(p) for p in parts]
            else:
                out[key] = [str(p) for p in parts]
        else:
            out[key] = scalar(value.strip())
    return out


def candidate_count(limit: int) -> int:
    """Prefetch depth per source: enough headroom for fusion to reorder, bounded for cost."""
    return min(max(MIN_CANDIDATES, 5 * limit), 5 * MAX_LIMIT)


def build_formula(
    weights: Sequence[float],
    negative_weight: float,
    popularity_field: str | None,
    popularity_weight: float,
    popularity_scale: float = 1.0,
) -> qm.FormulaQuery:
    """The fusion formula over prefetches ``0..n-1`` (positive) and ``n`` (negative, if any);
    the prior is ``popularity_weight · popularity_scale · ln(1 + popularity)``."""
    terms: list[qm.Expression] = [
        qm.MultExpression(mult=[w, f"$score[{i}]"]) for i, w in enumerate(weights)
    ]
    if negative_weight > 0:
        penalty = qm.MaxExpression(max=[f"$score[{len(weights)}]", 0.0])
        terms.append(qm.MultExpression(mult=[-negative_weight, penalty]))
    defaults: dict[str, Any] = {}
    if popularity_field and popularity_weight > 0:
        # The guard comes first: a product stops at its first 0 factor (core and local mode
        # alike), so items whose field is missing, negative, not a number or a list get no prior
        # instead of an error (local mode raises on a non-number; core would read it as 0).
        guard = qm.Filter(
            must=[
                qm.FieldCondition(key=popularity_field, range=qm.Range(gte=0)),
                qm.FieldCondition(key=popularity_field, values_count=qm.ValuesCount(lte=1)),
            ]
        )
        prior = qm.LnExpression(ln=qm.SumExpression(sum=[1.0, popularity_field]))
        terms.append(qm.MultExpression(mult=[guard, popularity_weight * popularity_scale, prior]))
        defaults[popularity_field] = 0.0
    return qm.FormulaQuery(formula=qm.SumExpression(sum=terms), defaults=defaults or None)


def mmr_vector(
    sources: Sequence[Source], vectors: Mapping[str, FloatArray], negative_weight: float
) -> list[float]:
    """The linear part of the formula as one unit query vector (MMR's relevance); the
    collaborative source lives in another vector space and is left out."""
    sources = [s for s in sources if s.kind != "collab"] or list(sources)
    q = sum((s.weight * vectors[s.vector] for s in sources), np.zeros(1))
    if negative_weight > 0 and NEGATIVE in vectors:
        with_neg = q - negative_weight * vectors[NEGATIVE]
        if np.linalg.norm(with_neg) > 1e-9:
            q = with_neg
    norm = float(np.linalg.norm(q))
    if norm <= 1e-9:  # opposite sources cancelled out: fall back to the heaviest one
        q, norm = vectors[max(sources, key=lambda s: s.weight).vector], 1.0
    result: list[float] = (q / norm).tolist()
    return result


def build_request(
    sources: Sequence[Source],
    vectors: Mapping[str, FloatArray],
    *,
    limit: int,
    query_filter: qm.Filter | None,
    negative_weight: float,
    popularity_field: str | None,
    popularity_weight: float,
    diversity: float | None,
    popularity_scale: float = 1.0,
) -> qm.QueryRequest:
    """The one Query API request on the items collection (each backend translates it).

    With several sources, their prefetches only gather candidates (each source's top ``C``);
    a nested prefetch rescores the union by cosine with ``Q = Σ w_i q_i`` (unit ``q_i``), and the
    formula multiplies that by ``|Q|``, so every candidate's positive score is the full weighted
    sum ``Σ w_i cos(item, q_i)``, not only the terms of the sources that happened to retrieve it.
    A collaborative source (:func:`_with_collab`) retrieves its own candidates and scores the
    same union by ``q_c · collab`` (dot product on the items' ``collab`` vectors).
    """
    depth = candidate_count(limit)
    prefetch, weights = _positive_prefetches(sources, vectors, depth)
    use_negative = negative_weight > 0 and NEGATIVE in vectors
    if use_negative:
        prefetch.append(
            qm.Prefetch(query=vectors[NEGATIVE].tolist(), using=ITEM_VECTOR, limit=depth)
        )
    formula = build_formula(
        weights,
        negative_weight if use_negative else 0.0,
        popularity_field,
        popularity_weight,
        popularity_scale,
    )
    common: dict[str, Any] = {
        "filter": query_filter,
        "limit": limit,
        "with_payload": True,
        "with_vector": [ITEM_VECTOR],
    }
    if diversity is None:
        return qm.QueryRequest(prefetch=prefetch, query=formula, **common)
    fused = qm.Prefetch(prefetch=prefetch, query=formula, limit=depth)
    nearest = qm.NearestQuery(
        nearest=mmr_vector(sources, vectors, negative_weight if use_negative else 0.0),
        mmr=qm.Mmr(diversity=diversity, candidates_limit=depth),
    )
    return qm.QueryRequest(prefetch=[fused], query=nearest, using=ITEM_VECTOR, **common)


def _positive_prefetches(
    sources: Sequence[Source], vectors: Mapping[str, FloatArray], depth: int
) -> tuple[list[qm.Prefetch], list[float]]:
    """The positive prefetches and the formula weight of each one's ``$score``.

    One prefetch per source (its top ``depth``) weighted by the source's weight; with several
    sources, wrapped in one prefetch that rescores their union by cosine with the unit
    ``Q = Σ w_i q_i`` and is weighted by ``|Q|``, so every candidate gets the full weighted sum.
    If the sources cancel out (``|Q|`` ≈ 0), each is scored by its own prefetch instead.
    """
    if any(s.kind == "collab" for s in sources):
        return _with_collab(sources, vectors, depth)
    retrieve = [
        qm.Prefetch(query=vectors[s.vector].tolist(), using=ITEM_VECTOR, limit=depth)
        for s in sources
    ]
    weights = [s.weight for s in sources]
    if len(sources) <= 1:
        return retrieve, weights
    combined = sum(
        (s.weight * vectors[s.vector] / np.linalg.norm(vectors[s.vector]) for s in sources),
        np.zeros(1),
    )
    length = float(np.linalg.norm(combined))
    if not length > 1e-6:  # the sources cancel out (or NaN): score each by its own prefetch
        return retrieve, weights
    rescored = qm.Prefetch(
        prefetch=retrieve,
        query=(combined / length).tolist(),
        using=ITEM_VECTOR,
        limit=depth * len(sources),  # keeps the whole union
    )
    return [rescored], [length]


def _with_collab(
    sources: Sequence[Source], vectors: Mapping[str, FloatArray], depth: int
) -> tuple[list[qm.Prefetch], list[float]]:
    """The positive prefetches when a collaborative source is among ``sources``.

    Every source retrieves its top ``depth`` (the content sources by cosine on ``content``, the
    collaborative one by dot product on ``collab``). Two stages rescore the union of those
    candidates: one by cosine with the content sources' ``Q = Σ w_i q_i`` (weighted ``|Q|``),
    one by ``q_c · collab`` (weighted ``w_c``), so every candidate gets both parts of the
    score. An item without a ``collab`` vector (none has been derived for it yet) is not in the
    second stage and gets 0 there.
    """
    content = [s for s in sources if s.kind != "collab"]
    collab = next(s for s in sources if s.kind == "collab")
    collab_query = vectors[collab.vector].tolist()
    retrieve = [
        qm.Prefetch(query=vectors[s.vector].tolist(), using=ITEM_VECTOR, limit=depth)
        for s in content
    ]
    retrieve.append(qm.Prefetch(query=collab_query, using=COLLAB, limit=depth))
    union = depth * len(retrieve)
    if not content:
        return retrieve, [collab.weight]
    combined = sum(
        (s.weight * vectors[s.vector] / np.linalg.norm(vectors[s.vector]) for s in content),
        np.zeros(1),
    )
    length = float(np.linalg.norm(combined))
    stages: list[qm.Prefetch] = []
    weights: list[float] = []
    if length > 1e-6:
        query = (combined / length).tolist()
        stages.append(qm.Prefetch(prefetch=retrieve, query=query, using=ITEM_VECTOR, limit=union))
        weights.append(length)
    else:  # the content sources cancel out: each scored by its own prefetch
        stages += retrieve[:-1]
        weights += [s.weight for s in content]
    stages.append(qm.Prefetch(prefetch=retrieve, query=collab_query, using=COLLAB, limit=union))
    weights.append(collab.weight)
    return stages, weights


def attribute(
    item_vector: FloatArray | None, sources: Sequence[Source], vectors: Mapping[str, FloatArray]
) -> str | None:
    """The content source contributing most (``w_i · cos``) to one item; ``None`` without a
    vector (the collaborative source scores another vector space and is not compared)."""
    sources = [s for s in sources if s.kind != "collab"]
    if item_vector is None or not sources:
        return None
    norm = float(np.linalg.norm(item_vector))
    if norm == 0:
        return None
    unit = item_vector / norm
    best = max(sources, key=lambda s: s.weight * float(vectors[s.vector] @ unit))
    return best.name
