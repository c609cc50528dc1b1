"""The translation of Qdrant's REST data model into qdrant-edge (:mod:`models.store.edge_query`).

Behaviour, not object shapes: each request runs on a small real embedded shard
(:class:`EdgeBackend`), and its answer is checked against what the request means, computed here
by hand from the payloads, and against qdrant-client's local mode (an independent
implementation of the same semantics) holding the same points. What the embedded engine cannot
answer must raise :class:`UnsupportedRequest` naming the feature.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client.http import models as qm

from models.store import CollectionLayout, StoreError, UnsupportedRequest
from models.store import edge_query as tr
from models.store.client import ClientBackend
from models.store.edge import EdgeBackend

C = "points"
DIM = 4
UUID_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "point-13"))
IDS: list[int | str] = [*range(1, 13), UUID_ID]
QUERY = [0.3, -0.2, 0.9, 0.1]
TOL = 1e-4
Payload = dict[str, Any]


def payload_of(i: int) -> Payload:
    """Point ``i``'s payload: every kind of value a condition or a formula can look at."""
    p: Payload = {
        "name": f"p{i}",
        "n": i,
        "x": i * 0.5,
        "color": ("red", "green", "blue")[i % 3],
        "flag": i % 2 == 0,
        "tags": ["a", "b", "c"][: i % 4],
        "text": ("the quick brown fox", "a lazy dog", "brown bread and jam")[i % 3],
        "when": f"2024-01-{i:02d}T00:00:00Z",
        "nested": [{"k": i, "s": "odd" if i % 2 else "even"}, {"k": 10 * i, "s": "x"}],
        "loc": {"lon": 13.4 + 0.01 * i, "lat": 52.5},
    }
    if i % 4 == 0:
        p["maybe"] = None
    elif i % 4 == 2:
        p["maybe"] = "yes"
    if i % 5:
        p["pop"] = float(i * i)
    return p


def points() -> list[qm.PointStruct]:
    rng = np.random.default_rng(7)
    out = []
    for k, pid in enumerate(IDS, start=1):
        vectors = {"a": rng.normal(size=DIM).tolist()}
        if k % 3:  # every third point has no vector "b"
            vectors["b"] = rng.normal(size=DIM).tolist()
        out.append(qm.PointStruct(id=pid, vector=vectors, payload=payload_of(k)))
    return out


POINTS = points()
PAYLOADS = {str(p.payload["name"]): p.payload for p in POINTS if p.payload}
LAYOUT = CollectionLayout(
    ("a", "b"), DIM, searched=True, payload_indexes={"n": "integer", "x": "float"}
)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeBackend]:
    path: Path = tmp_path_factory.mktemp("edge_query")
    backend = EdgeBackend(path)
    backend.create_collection(C, LAYOUT)
    backend.upsert(C, POINTS)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def local() -> Iterator[ClientBackend]:
    backend = ClientBackend.local()
    backend.create_collection(C, LAYOUT)
    backend.upsert(C, POINTS)
    yield backend
    backend.close()


def names(backend: Any, f: qm.Filter) -> set[str]:
    records, _ = backend.scroll(C, limit=100, query_filter=f, with_payload=["name"])
    return {str(r.payload["name"]) for r in records}


def run(
    edge: EdgeBackend, local: ClientBackend, request: qm.QueryRequest, *, ties: bool = False
) -> list[qm.ScoredPoint]:
    """The request on both engines: the same points in the same order, scores within TOL.

    ``ties``: equal scores (a formula of payload values alone) may come in either order, so
    the answers are compared as (score, id) sets, in descending score order.
    """
    got, want = edge.query(C, request), local.query(C, request)
    if ties:

        def key(points: list[qm.ScoredPoint]) -> list[tuple[float, str]]:
            return sorted((-round(p.score, 4), str(p.id)) for p in points)

        assert key(got) == key(want), (got, want)
        assert [p.score for p in got] == sorted((p.score for p in got), reverse=True)
        return got
    assert [p.id for p in got] == [p.id for p in want], (got, want)
    for g, w in zip(got, want, strict=True):
        assert g.score == pytest.approx(w.score, abs=TOL), (g.id, g.score, w.score)
    return got


def cosines(vector: list[float], using: str = "a") -> dict[str, float]:
    """Cosine of ``vector`` with each point's vector ``using`` (by name)."""
    q = np.asarray(vector) / np.linalg.norm(vector)
    out = {}
    for p in POINTS:
        v = p.vector.get(using) if isinstance(p.vector, dict) else None
        if isinstance(v, list) and p.payload:
            out[str(p.payload["name"])] = float(q @ (np.asarray(v) / np.linalg.norm(v)))
    return out


def by_name(found: list[qm.ScoredPoint]) -> dict[str, float]:
    return {str(p.payload["name"]): p.score for p in found if p.payload}


# -- filters -------------------------------------------------------------------------------------


def field(key: str, **kw: Any) -> qm.FieldCondition:
    return qm.FieldCondition(key=key, **kw)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


FILTERS: dict[str, tuple[qm.Filter, Callable[[Payload], bool]]] = {
    "match_str": (
        qm.Filter(must=[field("color", match=qm.MatchValue(value="red"))]),
        lambda p: p["color"] == "red",
    ),
    "match_int": (
        qm.Filter(must=[field("n", match=qm.MatchValue(value=5))]),
        lambda p: p["n"] == 5,
    ),
    "match_bool": (
        qm.Filter(must=[field("flag", match=qm.MatchValue(value=True))]),
        lambda p: p["flag"],
    ),
    "match_any_str_in_list": (
        qm.Filter(must=[field("tags", match=qm.MatchAny(any=["c", "z"]))]),
        lambda p: "c" in p["tags"],
    ),
    "match_any_int": (
        qm.Filter(must=[field("n", match=qm.MatchAny(any=[1, 2, 11]))]),
        lambda p: p["n"] in (1, 2, 11),
    ),
    "match_except_str": (
        qm.Filter(must=[field("color", match=qm.MatchExcept(**{"except": ["red", "blue"]}))]),
        lambda p: p["color"] == "green",
    ),
    "match_except_int": (
        qm.Filter(must=[field("n", match=qm.MatchExcept(**{"except": [1, 2, 3]}))]),
        lambda p: p["n"] > 3,
    ),
    "match_text": (
        qm.Filter(must=[field("text", match=qm.MatchText(text="brown"))]),
        lambda p: "brown" in p["text"],
    ),
    "match_text_all_words": (
        qm.Filter(must=[field("text", match=qm.MatchText(text="quick fox"))]),
        lambda p: "quick" in p["text"] and "fox" in p["text"],
    ),
    "match_text_any_word": (
        qm.Filter(must=[field("text", match=qm.MatchTextAny(text_any="fox lazy"))]),
        lambda p: "fox" in p["text"] or "lazy" in p["text"],
    ),
    "match_phrase": (
        qm.Filter(must=[field("text", match=qm.MatchPhrase(phrase="brown fox"))]),
        lambda p: "brown fox" in p["text"],
    ),
    "match_prefix": (
        qm.Filter(must=[field("text", match=qm.MatchPrefix(prefix="brown"))]),
        lambda p: p["text"].startswith("brown"),
    ),
    "match_substring": (
        qm.Filter(must=[field("text", match=qm.MatchSubstring(substring="own br"))]),
        lambda p: "own br" in p["text"],
    ),
    "range_float": (
        qm.Filter(must=[field("x", range=qm.Range(gt=1.0, lte=3.5))]),
        lambda p: 1.0 < p["x"] <= 3.5,
    ),
    "range_int": (
        qm.Filter(must=[field("n", range=qm.Range(gte=4, lt=9))]),
        lambda p: 4 <= p["n"] < 9,
    ),
    "range_datetime": (
        qm.Filter(
            must=[
                field(
                    "when",
                    range=qm.DatetimeRange(
                        gte=when("2024-01-03T00:00:00"), lt=when("2024-01-07T00:00:00")
                    ),
                )
            ]
        ),
        lambda p: 3 <= p["n"] < 7,
    ),
    "values_count": (
        qm.Filter(must=[field("tags", values_count=qm.ValuesCount(gte=2))]),
        lambda p: len(p["tags"]) >= 2,
    ),
    "values_count_lt": (
        qm.Filter(must=[field("tags", values_count=qm.ValuesCount(lt=1))]),
        lambda p: not p["tags"],
    ),
    "is_empty": (
        qm.Filter(must=[qm.IsEmptyCondition(is_empty=qm.PayloadField(key="maybe"))]),
        lambda p: p.get("maybe") is None,
    ),
    "is_empty_list": (
        qm.Filter(must=[qm.IsEmptyCondition(is_empty=qm.PayloadField(key="tags"))]),
        lambda p: not p["tags"],
    ),
    "is_null": (
        qm.Filter(must=[qm.IsNullCondition(is_null=qm.PayloadField(key="maybe"))]),
        lambda p: "maybe" in p and p["maybe"] is None,
    ),
    "field_is_empty_flag": (
        qm.Filter(must=[field("tags", is_empty=True)]),
        lambda p: not p["tags"],
    ),
    "field_is_null_flag": (
        qm.Filter(must=[field("maybe", is_null=True)]),
        lambda p: "maybe" in p and p["maybe"] is None,
    ),
    "has_id": (
        qm.Filter(must=[qm.HasIdCondition(has_id=[1, 3, UUID_ID])]),
        lambda p: p["n"] in (1, 3, 13),
    ),
    "has_vector": (
        qm.Filter(must=[qm.HasVectorCondition(has_vector="b")]),
        lambda p: p["n"] % 3 != 0,
    ),
    "nested_same_element": (
        qm.Filter(
            must=[
                qm.NestedCondition(
                    nested=qm.Nested(
                        key="nested",
                        filter=qm.Filter(
                            must=[
                                field("k", range=qm.Range(gte=3)),
                                field("s", match=qm.MatchValue(value="odd")),
                            ]
                        ),
                    )
                )
            ]
        ),
        lambda p: p["n"] >= 3 and p["n"] % 2 == 1,
    ),
    "flat_array_paths_any_element": (  # unlike nested: k ≥ 3 and s == "odd" in any elements
        qm.Filter(
            must=[
                field("nested[].k", range=qm.Range(gte=3)),
                field("nested[].s", match=qm.MatchValue(value="odd")),
            ]
        ),
        lambda p: p["n"] % 2 == 1,
    ),
    "should_must_not": (
        qm.Filter(
            should=[
                field("color", match=qm.MatchValue(value="red")),
                field("n", range=qm.Range(gte=11)),
            ],
            must_not=[field("flag", match=qm.MatchValue(value=True))],
        ),
        lambda p: (p["color"] == "red" or p["n"] >= 11) and not p["flag"],
    ),
    "min_should": (
        qm.Filter(
            min_should=qm.MinShould(
                conditions=[
                    field("color", match=qm.MatchValue(value="blue")),
                    field("flag", match=qm.MatchValue(value=True)),
                    field("n", range=qm.Range(lte=6)),
                ],
                min_count=2,
            )
        ),
        lambda p: sum([p["color"] == "blue", p["flag"], p["n"] <= 6]) >= 2,
    ),
    "sub_filter": (
        qm.Filter(
            must=[
                qm.Filter(
                    should=[field("n", match=qm.MatchValue(value=2)), qm.HasIdCondition(has_id=[7])]
                ),
            ],
            must_not=[qm.Filter(must=[field("color", match=qm.MatchValue(value="green"))])],
        ),
        lambda p: p["n"] == 2,  # 7 is green
    ),
}


@pytest.mark.parametrize(("f", "expected"), FILTERS.values(), ids=FILTERS.keys())
def test_filters(
    edge: EdgeBackend, local: ClientBackend, f: qm.Filter, expected: Callable[[Payload], bool]
) -> None:
    """Each condition kind selects what it means, on the engine and in local mode alike."""
    want = {name for name, p in PAYLOADS.items() if expected(p)}
    assert want and want != set(PAYLOADS), "a filter case must select some points, not all"
    assert names(edge, f) == want
    assert names(local, f) == want
    assert edge.count(C, f) == len(want)


def test_filters_in_a_query(edge: EdgeBackend, local: ClientBackend) -> None:
    """A filter at the query and at a prefetch level applies to what the query ranks."""
    f, _ = FILTERS["should_must_not"]
    found = run(edge, local, qm.QueryRequest(query=QUERY, using="a", filter=f, limit=20))
    assert {str(p.id) for p in found} == {
        str(p.id) for p in edge.scroll(C, limit=20, query_filter=f)[0]
    }
    nested = qm.QueryRequest(
        prefetch=[qm.Prefetch(query=QUERY, using="a", filter=f, limit=20)],
        query=qm.FormulaQuery(formula="$score"),
        limit=20,
    )
    assert len(run(edge, local, nested)) == len(found)


def test_geo_filters_are_refused() -> None:
    """Geo conditions are a server feature here: a clear refusal, never a silent no-op."""
    origin = qm.GeoPoint(lon=13.4, lat=52.5)
    conditions = [
        field("loc", geo_radius=qm.GeoRadius(center=origin, radius=1000.0)),
        field(
            "loc",
            geo_bounding_box=qm.GeoBoundingBox(
                top_left=qm.GeoPoint(lon=13.0, lat=53.0),
                bottom_right=qm.GeoPoint(lon=14.0, lat=52.0),
            ),
        ),
        field(
            "loc",
            geo_polygon=qm.GeoPolygon(
                exterior=qm.GeoLineString(
                    points=[
                        origin,
                        qm.GeoPoint(lon=14, lat=52.5),
                        qm.GeoPoint(lon=14, lat=53),
                        origin,
                    ]
                )
            ),
        ),
    ]
    for c in conditions:
        with pytest.raises(UnsupportedRequest, match="geo filter"):
            tr.filter_(qm.Filter(must=[c]))
        with pytest.raises(UnsupportedRequest, match="geo filter"):
            tr.filter_(qm.Filter(should=[qm.Filter(must_not=[c])]))  # found however deep


# -- formulas ------------------------------------------------------------------------------------


def formula_request(
    formula: qm.Expression, defaults: dict[str, Any] | None = None
) -> qm.QueryRequest:
    """Rescore every point's cosine to QUERY (``$score``) with ``formula``."""
    return qm.QueryRequest(
        prefetch=[qm.Prefetch(query=QUERY, using="a", limit=20)],
        query=qm.FormulaQuery(formula=formula, defaults=defaults),
        limit=20,
        with_payload=True,
    )


def red(p: Payload) -> float:
    return 1.0 if p["color"] == "red" else 0.0


def decay(kind: str, x: float, target: float, midpoint: float, scale: float) -> float:
    """Qdrant's decay functions (documentation of score boosting)."""
    d = abs(x - target)
    if kind == "lin":
        return max(0.0, 1.0 - (1.0 - midpoint) / scale * d)
    if kind == "exp":
        return math.exp(math.log(midpoint) / scale * d)
    return math.exp(math.log(midpoint) / scale**2 * d * d)


DAY_S = 86_400.0
RED = field("color", match=qm.MatchValue(value="red"))
ORIGIN = qm.GeoPoint(lon=13.4, lat=52.5)


def haversine_m(lon: float, lat: float) -> float:
    """Metres from ORIGIN along the earth's surface (Qdrant's radius 6371.0088 km)."""
    p1, p2 = math.radians(ORIGIN.lat), math.radians(lat)
    dp, dl = p2 - p1, math.radians(lon - ORIGIN.lon)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


Score = Callable[[float, Payload], float]
FORMULAS: dict[str, tuple[qm.Expression, dict[str, Any] | None, Score]] = {
    "constant_variable_sum": (
        qm.SumExpression(sum=["$score", 0.5, "x"]),
        None,
        lambda s, p: s + 0.5 + p["x"],
    ),
    "mult_neg_abs": (
        qm.MultExpression(
            mult=[
                "$score",
                qm.AbsExpression(abs=qm.NegExpression(neg=qm.SumExpression(sum=["x", -3.0]))),
            ]
        ),
        None,
        lambda s, p: s * abs(-(p["x"] - 3.0)),
    ),
    "sqrt_pow_exp": (
        qm.SumExpression(
            sum=[
                qm.SqrtExpression(sqrt="n"),
                qm.PowExpression(pow=qm.PowParams(base="x", exponent=1.5)),
                qm.ExpExpression(exp=qm.MultExpression(mult=[0.1, "n"])),
            ]
        ),
        None,
        lambda s, p: math.sqrt(p["n"]) + p["x"] ** 1.5 + math.exp(0.1 * p["n"]),
    ),
    "logs_acosh": (
        qm.SumExpression(
            sum=[
                qm.Log10Expression(log10="n"),
                qm.LnExpression(ln="x"),
                qm.AcoshExpression(acosh=qm.SumExpression(sum=["n", 1.0])),
            ]
        ),
        None,
        lambda s, p: math.log10(p["n"]) + math.log(p["x"]) + math.acosh(p["n"] + 1.0),
    ),
    "div_by_zero_default": (
        qm.DivExpression(
            div=qm.DivParams(
                left="x", right=qm.SumExpression(sum=["n", -5.0]), by_zero_default=-7.0
            )
        ),
        None,
        lambda s, p: -7.0 if p["n"] == 5 else p["x"] / (p["n"] - 5.0),
    ),
    "min_max": (
        qm.SumExpression(
            sum=[qm.MaxExpression(max=["$score", 0.0]), qm.MinExpression(min=["x", 2.0, "n"])]
        ),
        None,
        lambda s, p: max(s, 0.0) + min(p["x"], 2.0, p["n"]),
    ),
    "defaults_for_missing_variables": (
        qm.SumExpression(sum=["$score", "pop"]),
        {"pop": 7.0},
        lambda s, p: s + p.get("pop", 7.0),
    ),
    "conditions": (
        qm.SumExpression(
            sum=[
                qm.MultExpression(mult=[RED, 10.0]),
                qm.MultExpression(mult=[qm.Filter(must_not=[RED]), 100.0]),
                qm.MultExpression(mult=[qm.HasIdCondition(has_id=[2, UUID_ID]), 1000.0]),
                qm.IsEmptyCondition(is_empty=qm.PayloadField(key="maybe")),
                qm.MultExpression(
                    mult=[qm.IsNullCondition(is_null=qm.PayloadField(key="maybe")), 0.5]
                ),
                qm.MultExpression(mult=[qm.HasVectorCondition(has_vector="b"), 0.25]),
            ]
        ),
        None,
        lambda s, p: (
            10 * red(p)
            + 100 * (1 - red(p))
            + 1000 * (p["n"] in (2, 13))
            + (p.get("maybe") is None)
            + 0.5 * ("maybe" in p and p["maybe"] is None)
            + 0.25 * (p["n"] % 3 != 0)
        ),
    ),
    "datetime": (
        qm.SumExpression(
            sum=[
                qm.DatetimeKeyExpression(datetime_key="when"),
                qm.NegExpression(neg=qm.DatetimeExpression(datetime="2024-01-01T00:00:00Z")),
            ]
        ),
        None,
        lambda s, p: (p["n"] - 1) * DAY_S,  # seconds
    ),
    "geo_distance": (
        qm.GeoDistance(geo_distance=qm.GeoDistanceParams(origin=ORIGIN, to="loc")),
        None,
        lambda s, p: haversine_m(p["loc"]["lon"], p["loc"]["lat"]),
    ),
    "decays": (
        qm.SumExpression(
            sum=[
                qm.LinDecayExpression(
                    lin_decay=qm.DecayParamsExpression(x="x", target=3.0, scale=2.0, midpoint=0.3)
                ),
                qm.ExpDecayExpression(
                    exp_decay=qm.DecayParamsExpression(x="x", target="n", scale=4.0)
                ),
                qm.GaussDecayExpression(
                    gauss_decay=qm.DecayParamsExpression(x="$score", midpoint=0.2)
                ),
            ]
        ),
        None,
        lambda s, p: (
            decay("lin", p["x"], 3.0, 0.3, 2.0)
            + decay("exp", p["x"], p["n"], 0.5, 4.0)
            + decay("gauss", s, 0.0, 0.2, 1.0)
        ),
    ),
}


@pytest.mark.parametrize(
    ("formula", "defaults", "expected"), FORMULAS.values(), ids=FORMULAS.keys()
)
def test_formulas(
    edge: EdgeBackend,
    local: ClientBackend,
    formula: qm.Expression,
    defaults: dict[str, Any] | None,
    expected: Score,
) -> None:
    """Every expression kind computes what it means (best first), as local mode computes it."""
    found = run(edge, local, formula_request(formula, defaults), ties=True)
    cos = cosines(QUERY)
    want = {name: expected(cos[name], p) for name, p in PAYLOADS.items()}
    got = by_name(found)
    assert got.keys() == want.keys()
    for name, score in got.items():
        assert score == pytest.approx(want[name], rel=1e-5, abs=TOL), name
    scores = [p.score for p in found]
    assert scores == sorted(scores, reverse=True)


def test_formula_terms_that_are_not_numbers_are_refused() -> None:
    with pytest.raises(UnsupportedRequest, match="formula term"):
        tr.expression(True)


# -- order_by, fusion, sample --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_by", "expected"),
    [
        ("n", list(range(1, 6))),
        (qm.OrderBy(key="n", direction=qm.Direction.DESC), list(range(13, 8, -1))),
        (qm.OrderBy(key="n", direction=qm.Direction.DESC, start_from=8), list(range(8, 3, -1))),
        (qm.OrderBy(key="x", direction=qm.Direction.ASC, start_from=2.5), list(range(5, 10))),
    ],
    ids=["key_only", "desc", "desc_start_from", "float_asc_start_from"],
)
def test_order_by(
    edge: EdgeBackend, local: ClientBackend, order_by: qm.OrderByInterface, expected: list[int]
) -> None:
    """Ordering by an indexed payload field, either way, from a value; the value comes back."""
    request = qm.QueryRequest(query=qm.OrderByQuery(order_by=order_by), limit=5, with_payload=True)
    found = run(edge, local, request)
    assert [p.payload["n"] for p in found if p.payload] == expected
    key = order_by if isinstance(order_by, str) else order_by.key
    assert [p.order_value for p in found] == [p.payload[key] for p in found if p.payload]


def test_order_by_filtered(edge: EdgeBackend, local: ClientBackend) -> None:
    red_only = qm.Filter(must=[RED])
    request = qm.QueryRequest(
        query=qm.OrderByQuery(order_by=qm.OrderBy(key="n", direction=qm.Direction.DESC)),
        filter=red_only,
        limit=3,
        with_payload=True,
    )
    found = run(edge, local, request)
    assert [p.payload["n"] for p in found if p.payload] == [12, 9, 6]


def fusion_request(fusion: qm.Query) -> qm.QueryRequest:
    return qm.QueryRequest(
        prefetch=[
            qm.Prefetch(query=QUERY, using="a", limit=6),
            qm.Prefetch(query=[0.5, 0.5, -0.5, 0.1], using="b", limit=6),
        ],
        query=fusion,
        limit=12,  # the whole union: a tie at the cut could go either way
        with_payload=True,
    )


def ranks(vector: list[float], using: str, limit: int) -> dict[str, int]:
    """0-based rank of each point among the ``limit`` nearest to ``vector`` by ``using``."""
    cos = cosines(vector, using)
    return {name: r for r, name in enumerate(sorted(cos, key=lambda n: -cos[n])[:limit])}


@pytest.mark.parametrize(
    ("fusion", "k", "weights"),
    [
        (qm.FusionQuery(fusion=qm.Fusion.RRF), 2, (1.0, 1.0)),
        (qm.RrfQuery(rrf=qm.Rrf()), 2, (1.0, 1.0)),
        (qm.RrfQuery(rrf=qm.Rrf(k=60)), 60, (1.0, 1.0)),
        (qm.RrfQuery(rrf=qm.Rrf(k=5, weights=[3.0, 1.0])), 5, (3.0, 1.0)),
    ],
    ids=["fusion_rrf", "rrf_default_k", "rrf_k", "rrf_weights"],
)
def test_rrf(
    edge: EdgeBackend,
    local: ClientBackend,
    fusion: qm.Query,
    k: int,
    weights: tuple[float, float],
) -> None:
    """Reciprocal rank fusion over the prefetches, 0-based rank ``r``: Σ 1 / (r + k), and
    with weights Σ 1 / ((r + 1) / weight + k − 1)."""
    found = run(edge, local, fusion_request(fusion), ties=True)  # one-list points tie
    lists = [ranks(QUERY, "a", 6), ranks([0.5, 0.5, -0.5, 0.1], "b", 6)]
    want = {
        name: sum(
            1 / ((r[name] + 1) / w + k - 1)
            for r, w in zip(lists, weights, strict=True)
            if name in r
        )
        for name in set(lists[0]) | set(lists[1])
    }
    got = by_name(found)
    assert got.keys() == want.keys()
    for name, score in got.items():
        assert score == pytest.approx(want[name], abs=TOL), name


def test_dbsf(edge: EdgeBackend, local: ClientBackend) -> None:
    """Distribution-based score fusion: same answer as local mode, and its fused candidates."""
    found = run(edge, local, fusion_request(qm.FusionQuery(fusion=qm.Fusion.DBSF)))
    union = set(ranks(QUERY, "a", 6)) | set(ranks([0.5, 0.5, -0.5, 0.1], "b", 6))
    assert set(by_name(found)) == union


def test_sample_respects_filter_and_limit(edge: EdgeBackend) -> None:
    f, expected = FILTERS["range_int"]
    request = qm.QueryRequest(query=qm.SampleQuery(sample=qm.Sample.RANDOM), filter=f, limit=3)
    found = edge.query(C, request.model_copy(update={"with_payload": True}))
    assert len(found) == 3 and all(expected(p.payload) for p in found if p.payload)


# -- nearest, MMR, recommend by point id ---------------------------------------------------------


def test_nearest_by_vector_and_by_point_id(edge: EdgeBackend, local: ClientBackend) -> None:
    """A vector query ranks by cosine; a point id queries with that point's vector, and the
    point itself is left out of the answer, as on a server."""
    found = run(edge, local, qm.QueryRequest(query=QUERY, using="a", limit=13, with_payload=True))
    cos = cosines(QUERY)
    assert [p.payload["name"] for p in found if p.payload] == sorted(cos, key=lambda n: -cos[n])
    for query, named in ((4, "4"), (qm.NearestQuery(nearest=4), "4"), (UUID_ID, UUID_ID)):
        by_id = run(edge, local, qm.QueryRequest(query=query, using="b", limit=20))
        assert named not in {str(p.id) for p in by_id}
        assert (
            len(by_id)
            == sum(1 for p in POINTS if isinstance(p.vector, dict) and "b" in p.vector) - 1
        )


def test_query_by_a_point_without_that_vector_is_refused(edge: EdgeBackend) -> None:
    with pytest.raises(UnsupportedRequest, match="no dense vector 'b'"):
        edge.query(C, qm.QueryRequest(query=6, using="b"))  # every third point lacks "b"


@pytest.mark.parametrize(
    ("diversity", "candidates", "limit"),
    [(0.0, 13, 6), (0.3, 13, 6), (0.5, 8, 6), (1.0, 13, 6), (None, None, 7), (0.6, None, 5)],
)
def test_mmr(
    edge: EdgeBackend,
    local: ClientBackend,
    diversity: float | None,
    candidates: int | None,
    limit: int,
) -> None:
    """MMR: the server's ``diversity`` (1 − lambda), candidates defaulting to the limit; the
    scores are the cosines to the query, the order MMR's."""
    mmr = qm.Mmr(diversity=diversity, candidates_limit=candidates)
    request = qm.QueryRequest(
        query=qm.NearestQuery(nearest=QUERY, mmr=mmr), using="a", limit=limit, with_payload=True
    )
    found = run(edge, local, request)
    cos = cosines(QUERY)
    pool = sorted(cos, key=lambda n: -cos[n])[: candidates or limit]
    assert set(by_name(found)) <= set(pool) and len(found) == min(limit, len(pool))
    for name, score in by_name(found).items():
        assert score == pytest.approx(cos[name], abs=TOL)
    if diversity == 0.0:  # pure relevance: nearest first
        assert list(by_name(found)) == pool[:limit]


@pytest.mark.parametrize(
    "strategy",
    [
        None,
        qm.RecommendStrategy.AVERAGE_VECTOR,
        qm.RecommendStrategy.BEST_SCORE,
        qm.RecommendStrategy.SUM_SCORES,
    ],
)
def test_recommend_by_point_ids(
    edge: EdgeBackend, local: ClientBackend, strategy: qm.RecommendStrategy | None
) -> None:
    """Examples by point id (and a raw vector among them); the examples are left out."""
    recommend = qm.RecommendInput(positive=[1, 2, QUERY], negative=[UUID_ID], strategy=strategy)
    request = qm.QueryRequest(query=qm.RecommendQuery(recommend=recommend), using="a", limit=20)
    found = run(edge, local, request)
    assert {str(p.id) for p in found}.isdisjoint({"1", "2", UUID_ID})
    assert len(found) == 10


def test_recommend_average_vector_is_the_servers(edge: EdgeBackend) -> None:
    """``average_vector`` (the default) is one query vector:
    avg(positive) + avg(positive) − avg(negative)."""
    vec = {str(p.id): np.asarray(p.vector["a"]) for p in POINTS if isinstance(p.vector, dict)}
    unit = {k: v / np.linalg.norm(v) for k, v in vec.items()}
    q = 2 * (unit["1"] + unit["2"]) / 2 - unit["3"]
    recommend = qm.RecommendInput(positive=[1, 2], negative=[3])
    found = edge.query(
        C, qm.QueryRequest(query=qm.RecommendQuery(recommend=recommend), using="a", limit=3)
    )
    want = sorted(
        (float(q @ u / np.linalg.norm(q)), k) for k, u in unit.items() if k not in ("1", "2", "3")
    )[::-1][:3]
    assert [str(p.id) for p in found] == [k for _, k in want]
    assert [p.score for p in found] == pytest.approx([s for s, _ in want], abs=TOL)


def test_point_id_in_a_prefetch(edge: EdgeBackend, local: ClientBackend) -> None:
    """A prefetch by point id; the point is excluded from what the request returns."""
    request = qm.QueryRequest(
        prefetch=[qm.Prefetch(query=4, using="a", limit=5)],
        query=qm.FormulaQuery(formula="$score"),
        limit=5,
    )
    found = run(edge, local, request)
    assert "4" not in {str(p.id) for p in found}


@pytest.mark.xfail(
    strict=False,
    raises=AssertionError,
    reason="scope of the exclusion of a point named in one prefetch: qdrant-client local mode "
    "leaves it out of that prefetch only (it may come back through another), EdgeBackend.query "
    "leaves every named point out of the whole request; the server's scope is unverified here",
)
def test_point_ids_named_in_sibling_prefetches(edge: EdgeBackend, local: ClientBackend) -> None:
    request = qm.QueryRequest(
        prefetch=[
            qm.Prefetch(query=1, using="a", limit=4),
            qm.Prefetch(query=2, using="b", limit=4),
        ],
        query=qm.FusionQuery(fusion=qm.Fusion.RRF),
        limit=6,
    )
    run(edge, local, request)


# -- request options -----------------------------------------------------------------------------


def test_offset_threshold_and_selectors(edge: EdgeBackend, local: ClientBackend) -> None:
    """offset, score_threshold, payload include/exclude and vector selection pass through."""
    base = qm.QueryRequest(query=QUERY, using="a", limit=4)
    first = run(edge, local, base.model_copy(update={"limit": 8}))
    paged = run(edge, local, base.model_copy(update={"offset": 4}))
    assert [p.id for p in paged] == [p.id for p in first[4:8]]
    kept = run(edge, local, base.model_copy(update={"limit": 20, "score_threshold": 0.2}))
    assert kept and all(p.score >= 0.2 for p in kept)
    include = edge.query(
        C, base.model_copy(update={"with_payload": qm.PayloadSelectorInclude(include=["n", "x"])})
    )
    assert all(set(p.payload or {}) == {"n", "x"} for p in include)
    exclude = edge.query(
        C,
        base.model_copy(
            update={"with_payload": qm.PayloadSelectorExclude(exclude=["nested", "loc"])}
        ),
    )
    for p in exclude:
        assert p.payload is not None and "name" in p.payload
        assert not {"nested", "loc"} & set(p.payload)
    keys = edge.query(C, base.model_copy(update={"with_payload": ["name"], "with_vector": ["b"]}))
    for p in keys:
        assert set(p.payload or {}) == {"name"}
        assert p.vector is None or set(p.vector) <= {"b"}
    plain = edge.query(C, base)
    assert all(p.payload is None and p.vector is None for p in plain)


def test_default_limit_is_the_servers(edge: EdgeBackend, local: ClientBackend) -> None:
    request = qm.QueryRequest(
        prefetch=[qm.Prefetch(query=QUERY, using="a")], query=qm.FormulaQuery(formula="$score")
    )
    assert len(run(edge, local, request)) == 10


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "match"),
    [
        (
            qm.QueryRequest(
                query=QUERY, using="a", lookup_from=qm.LookupLocation(collection="other")
            ),
            "lookup_from",
        ),
        (
            qm.QueryRequest(
                prefetch=[
                    qm.Prefetch(
                        query=1, using="a", lookup_from=qm.LookupLocation(collection="other")
                    )
                ],
                query=qm.FusionQuery(fusion=qm.Fusion.RRF),
            ),
            "lookup_from",
        ),
        (qm.QueryRequest(query=QUERY, using="a", shard_key="eu"), "shard keys"),
        (
            qm.QueryRequest(
                query=qm.DiscoverQuery(
                    discover=qm.DiscoverInput(
                        target=1, context=[qm.ContextPair(positive=2, negative=3)]
                    )
                ),
                using="a",
            ),
            "DiscoverQuery",
        ),
        (
            qm.QueryRequest(
                query=qm.ContextQuery(context=[qm.ContextPair(positive=2, negative=3)]), using="a"
            ),
            "ContextQuery",
        ),
        (
            qm.QueryRequest(query=qm.SparseVector(indices=[1], values=[0.5]), using="a"),
            "SparseVector",
        ),
        (qm.QueryRequest(query=[[0.1, 0.2, 0.3, 0.4]], using="a"), "query input list"),
        (
            qm.QueryRequest(query=qm.NearestQuery(nearest="not-a-uuid"), using="a"),
            "neither an unsigned integer nor a UUID",
        ),
        (
            qm.QueryRequest(
                query=qm.RecommendQuery(recommend=qm.RecommendInput(negative=[1])), using="a"
            ),
            "positive example",
        ),
    ],
    ids=[
        "lookup_from",
        "prefetch_lookup_from",
        "shard_key",
        "discover",
        "context",
        "sparse",
        "multivector",
        "bad_id",
        "recommend_no_positive",
    ],
)
def test_unsupported_requests_are_refused(
    edge: EdgeBackend, request_: qm.QueryRequest, match: str
) -> None:
    """What the embedded engine cannot do raises UnsupportedRequest (a ValueError and a
    StoreError, so the service answers 400) naming the feature."""
    with pytest.raises(UnsupportedRequest, match=match) as info:
        edge.query(C, request_)
    assert isinstance(info.value, ValueError) and isinstance(info.value, StoreError)
