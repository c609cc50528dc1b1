"""Qdrant's read-only REST endpoints of the service API, tested with qdrant-client itself.

The real aiohttp app (``ApiServer``) runs on 127.0.0.1 in a thread of its own over a store in a
temporary folder — the embedded engine, and qdrant-client's local mode standing in for a server
backend — and ``QdrantClient(url=...)`` reads through it. Every answer is compared with what the
store's backend returns directly (called in the same single store thread).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pytest
from pydantic import ValidationError
from qdrant_client import QdrantClient
from qdrant_client.common.version_check import get_server_version, is_compatible
from qdrant_client.http import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from models.encoder import Encoder
from models.settings import QdrantSettings
from models.store import InterestStore, item_point_id, user_point_id
from models.store.client import ClientBackend
from streams.embed.api import ApiServer
from streams.embed.qdrant_rest import (
    drop_keys,
    other_endpoint,
    parse_body,
    payload_selection,
    read_only_message,
    validation_summary,
)
from streams.settings import ApiSettings

T = TypeVar("T")
DIM = 8
NAMES = ["short_term", "long_term"]
N_ITEMS = 40
CATEGORIES = ("a", "b", "c")


class Served:
    """A store behind a running API: ``url`` for clients, ``direct`` to call the store in its
    own thread for the expected answer."""

    def __init__(self, store: InterestStore, executor: ThreadPoolExecutor, port: int) -> None:
        self.store = store
        self.executor = executor
        self.url = f"http://127.0.0.1:{port}"

    def direct(self, fn: Callable[[], T]) -> T:
        return self.executor.submit(fn).result(timeout=30)

    def client(self) -> QdrantClient:
        # The version check runs in a thread of the client's that may outlive a short test:
        # test_version_passes_qdrant_client_compatibility_check makes it synchronously.
        return QdrantClient(url=self.url, prefer_grpc=False, timeout=30, check_compatibility=False)


def _unit(rng: np.random.Generator) -> list[float]:
    v = rng.normal(size=DIM)
    values: list[float] = (v / np.linalg.norm(v)).tolist()
    return values


def _fill(store: InterestStore) -> None:
    rng = np.random.default_rng(7)
    store.ensure_collections(DIM, NAMES)
    store.upsert_items(
        [
            (
                f"i{n}",
                _unit(rng),
                {"category": CATEGORIES[n % 3], "popularity": n / 10, "meta": {"a": n, "b": None}},
            )
            for n in range(N_ITEMS)
        ]
    )
    store.upsert_users(
        [(f"u{n}", {name: _unit(rng) for name in NAMES}, {"seq": n}) for n in range(6)]
    )


def _open_store(kind: str, folder: Path) -> InterestStore:
    """The embedded engine in ``folder``, or qdrant-client's local mode for a server backend."""
    if kind == "embedded":
        return InterestStore.from_settings(QdrantSettings(path=folder / "qdrant"), DIM)
    return InterestStore(ClientBackend.local(":memory:"), dimension=DIM)


@pytest.fixture(scope="module", params=["embedded", "local"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The API over a filled store of each backend kind, for the whole module (reads only)."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="store")
    folder = tmp_path_factory.mktemp(request.param)
    store = executor.submit(_open_store, request.param, folder).result()
    executor.submit(_fill, store).result()

    async def metrics() -> bytes:
        return b""

    api = ApiServer(
        ApiSettings(host="127.0.0.1", port=0), store, Encoder(), executor,
        health=lambda: {"status": "ok"}, metrics=metrics,
        ensure_collections=lambda: store.ensure_collections(DIM, NAMES),
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-loop", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(api.start(), loop).result(timeout=10)
    assert api.port
    try:
        yield Served(store, executor, api.port)
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        executor.submit(store.close).result()
        executor.shutdown()


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[QdrantClient]:
    c = served.client()
    yield c
    c.close()


def _scored(points: list[qm.ScoredPoint]) -> list[tuple[Any, float, Any]]:
    return [(str(p.id), round(p.score, 5), p.payload) for p in points]


def _query(served: Served, collection: str, **fields: Any) -> list[qm.ScoredPoint]:
    request = qm.QueryRequest(**fields)
    return served.direct(lambda: served.store.backend.query(collection, request))


def _vector(n: int) -> list[float]:
    return _unit(np.random.default_rng(100 + n))


# -- collections ---------------------------------------------------------------------------------


def test_get_collection_describes_the_vectors(served: Served, client: QdrantClient) -> None:
    info = client.get_collection("items")
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict) and set(vectors) == {"content"}
    assert vectors["content"].size == DIM and vectors["content"].distance == qm.Distance.COSINE
    assert info.points_count == N_ITEMS
    direct = served.direct(lambda: served.store.backend.info("items"))
    assert info == direct
    users = client.get_collection("users").config.params.vectors
    assert isinstance(users, dict) and set(users) == set(NAMES)


def test_collection_exists_and_list(client: QdrantClient) -> None:
    assert client.collection_exists("items") and client.collection_exists("users")
    assert not client.collection_exists("nope")
    names = {c.name for c in client.get_collections().collections}
    assert names == {"items", "users"}


def test_unknown_collection_is_404(client: QdrantClient) -> None:
    with pytest.raises(UnexpectedResponse) as info:
        client.get_collection("nope")
    assert info.value.status_code == 404
    assert "nope" in info.value.structured()["status"]["error"]
    with pytest.raises(UnexpectedResponse) as info:
        client.query_points("nope", query=_vector(0), using="content")
    assert info.value.status_code == 404


def test_version_passes_qdrant_client_compatibility_check(served: Served) -> None:
    """What ``QdrantClient(url=...)`` checks at construction (in a thread): no warning."""
    version = get_server_version(served.url, {}, None, 10)
    assert version is not None
    assert is_compatible(importlib.metadata.version("qdrant-client"), version)
    assert "interest-stream" in httpx.get(served.url).json()["title"]


# -- query ---------------------------------------------------------------------------------------


def test_query_nearest_matches_the_backend(served: Served, client: QdrantClient) -> None:
    got = client.query_points("items", query=_vector(1), using="content", limit=5).points
    want = _query(served, "items", query=_vector(1), using="content", limit=5, with_payload=True)
    assert len(got) == 5 and _scored(got) == _scored(want)
    payload = got[0].payload or {}
    assert payload["meta"]["b"] is None  # a payload value that is None comes through


def test_query_with_using_on_users(served: Served, client: QdrantClient) -> None:
    got = client.query_points("users", query=_vector(2), using="long_term", limit=3).points
    want = _query(served, "users", query=_vector(2), using="long_term", limit=3, with_payload=True)
    assert _scored(got) == _scored(want)
    # by point id: the stored vector of that user
    pid = user_point_id("u1")
    by_id = client.query_points("users", query=pid, using="short_term", limit=3).points
    want = _query(served, "users", query=pid, using="short_term", limit=3, with_payload=True)
    assert _scored(by_id) == _scored(want) and len(by_id) == 3


def test_query_with_filter(served: Served, client: QdrantClient) -> None:
    flt = qm.Filter(must=[qm.FieldCondition(key="category", match=qm.MatchValue(value="b"))])
    got = client.query_points(
        "items", query=_vector(3), using="content", query_filter=flt, limit=50
    ).points
    want = _query(
        served, "items", query=_vector(3), using="content", filter=flt, limit=50, with_payload=True
    )
    assert _scored(got) == _scored(want)
    assert len(got) == len([n for n in range(N_ITEMS) if n % 3 == 1])
    assert all(p.payload and p.payload["category"] == "b" for p in got)


def test_query_with_prefetch_and_formula(served: Served, client: QdrantClient) -> None:
    prefetch = qm.Prefetch(query=_vector(4), using="content", limit=20)
    formula = qm.FormulaQuery(
        formula=qm.SumExpression(sum=["$score", qm.MultExpression(mult=[0.5, "popularity"])])
    )
    got = client.query_points("items", prefetch=prefetch, query=formula, limit=5).points
    want = _query(served, "items", prefetch=prefetch, query=formula, limit=5, with_payload=True)
    assert _scored(got) == _scored(want) and len(got) == 5


def test_query_order_by(served: Served, client: QdrantClient) -> None:
    order = qm.OrderByQuery(order_by=qm.OrderBy(key="popularity", direction=qm.Direction.DESC))
    got = client.query_points("items", query=order, limit=4).points
    want = _query(served, "items", query=order, limit=4, with_payload=True)
    assert [str(p.id) for p in got] == [str(p.id) for p in want]
    assert [p.payload["popularity"] for p in got if p.payload] == [3.9, 3.8, 3.7, 3.6]


def test_query_batch(served: Served, client: QdrantClient) -> None:
    requests = [
        qm.QueryRequest(query=_vector(5), using="content", limit=3, with_payload=True),
        qm.QueryRequest(query=_vector(6), using="content", limit=2, with_payload=False),
    ]
    got = client.query_batch_points("items", requests)
    assert [len(r.points) for r in got] == [3, 2]
    for response, request in zip(got, requests, strict=True):
        want = served.direct(lambda r=request: served.store.backend.query("items", r))
        assert _scored(response.points) == _scored(want)


def test_unsupported_query_is_400_with_the_reason(served: Served, client: QdrantClient) -> None:
    if served.store.backend.kind != "embedded":
        pytest.skip("lookup_from is a server feature: only the embedded engine refuses it")
    lookup = qm.LookupLocation(collection="users", vector="short_term")
    with pytest.raises(UnexpectedResponse) as info:
        client.query_points("items", query=user_point_id("u1"), lookup_from=lookup)
    assert info.value.status_code == 400
    assert "lookup_from is not supported" in info.value.structured()["status"]["error"]


# -- retrieve, scroll, count ---------------------------------------------------------------------


def test_retrieve_with_and_without_vectors(served: Served, client: QdrantClient) -> None:
    ids = [item_point_id("i3"), item_point_id("i7"), str(uuid.uuid4())]
    plain = client.retrieve("items", ids)
    assert {str(r.id) for r in plain} == set(ids[:2])
    assert all(r.vector is None and r.payload and "category" in r.payload for r in plain)
    full = client.retrieve("items", ids, with_vectors=True, with_payload=["popularity"])
    direct = served.direct(
        lambda: served.store.backend.retrieve(
            "items", ids, with_payload=["popularity"], with_vectors=True
        )
    )
    by_id = {str(r.id): r for r in direct}
    for rec in full:
        assert rec.payload == by_id[str(rec.id)].payload and set(rec.payload) == {"popularity"}
        assert isinstance(rec.vector, dict)
        np.testing.assert_allclose(rec.vector["content"], by_id[str(rec.id)].vector["content"])  # type: ignore[index, call-overload]
    excluded = client.retrieve(
        "items", ids[:1], with_payload=qm.PayloadSelectorExclude(exclude=["meta.a", "category"])
    )
    assert excluded[0].payload == {"item_id": "i3", "popularity": 0.3, "meta": {"b": None}}


def test_get_one_point_by_url(served: Served) -> None:
    pid = item_point_id("i5")
    body = httpx.get(f"{served.url}/collections/items/points/{pid}").json()
    assert body["status"] == "ok" and body["result"]["id"] == pid
    assert body["result"]["payload"]["item_id"] == "i5" and "content" in body["result"]["vector"]
    missing = httpx.get(f"{served.url}/collections/items/points/{uuid.uuid4()}")
    assert missing.status_code == 404 and "No point" in missing.json()["status"]["error"]


def test_scroll_pages_to_the_end(served: Served, client: QdrantClient) -> None:
    seen: list[str] = []
    offset = None
    while True:
        page, offset = client.scroll("items", limit=7, offset=offset, with_payload=False)
        assert len(page) <= 7 and all(r.payload is None for r in page)
        seen += [str(r.id) for r in page]
        if offset is None:
            break
    assert len(seen) == len(set(seen)) == N_ITEMS
    direct, end = served.direct(
        lambda: served.store.backend.scroll("items", limit=N_ITEMS, with_payload=False)
    )
    assert seen == [str(r.id) for r in direct] and end is None


def test_scroll_with_filter_and_order_by(served: Served, client: QdrantClient) -> None:
    flt = qm.Filter(must=[qm.FieldCondition(key="category", match=qm.MatchValue(value="a"))])
    page, offset = client.scroll("items", scroll_filter=flt, limit=100)
    assert offset is None and len(page) == len(range(0, N_ITEMS, 3))
    ordered, offset = client.scroll(
        "items", limit=3, order_by=qm.OrderBy(key="popularity", direction=qm.Direction.ASC)
    )
    assert offset is None
    assert [r.payload["popularity"] for r in ordered if r.payload] == [0.0, 0.1, 0.2]
    with pytest.raises(UnexpectedResponse) as info:
        client.scroll("items", order_by="popularity", offset=item_point_id("i1"))
    assert info.value.status_code == 400 and "order_by" in str(info.value.structured())


def test_count_with_filter(served: Served, client: QdrantClient) -> None:
    assert client.count("items").count == N_ITEMS
    flt = qm.Filter(must=[qm.FieldCondition(key="popularity", range=qm.Range(gte=2.0))])
    got = client.count("items", count_filter=flt).count
    assert got == served.direct(lambda: served.store.backend.count("items", flt)) == 20
    assert client.count("users").count == 6


# -- writes and bad requests ---------------------------------------------------------------------


def test_writes_are_refused(served: Served, client: QdrantClient) -> None:
    point = qm.PointStruct(id=str(uuid.uuid4()), vector={"content": _vector(9)}, payload={})
    writes: list[Callable[[], Any]] = [
        lambda: client.upsert("items", [point]),
        lambda: client.delete("items", qm.PointIdsList(points=[item_point_id("i1")])),
        lambda: client.set_payload("items", {"x": 1}, points=[item_point_id("i1")]),
        lambda: client.delete_collection("items"),
        lambda: client.create_collection(
            "other", vectors_config=qm.VectorParams(size=DIM, distance=qm.Distance.COSINE)
        ),
        lambda: client.create_payload_index("items", "x", qm.PayloadSchemaType.KEYWORD),
    ]
    for write in writes:
        with pytest.raises(UnexpectedResponse) as info:
            write()
        assert info.value.status_code == 403
        error = info.value.structured()["status"]["error"]
        assert error == read_only_message(served.store.backend.kind)
        assert error.startswith("read-only:") and "items load" in str(info.value)
    assert client.count("items").count == N_ITEMS


def test_bad_bodies_are_400(served: Served) -> None:
    url = f"{served.url}/collections/items/points/query"
    bad_json = httpx.post(url, content=b"{nope")
    assert bad_json.status_code == 400
    assert bad_json.json()["status"]["error"].startswith("Format error in JSON body")
    bad_field = httpx.post(url, json={"query": {"nearestt": [1.0]}, "limit": 3})
    assert bad_field.status_code == 400
    assert "query: matches none" in bad_field.json()["status"]["error"]
    extra = httpx.post(url, json={"limitt": 3})
    assert extra.status_code == 400 and "limitt" in extra.json()["status"]["error"]
    unserved = httpx.post(f"{served.url}/collections/items/points/search", json={})
    assert unserved.status_code == 400 and "not served" in unserved.json()["status"]["error"]


# -- the pure pieces -----------------------------------------------------------------------------


def test_other_endpoint_classifies_writes_and_unserved_reads() -> None:
    assert other_endpoint("PUT", "/collections/items/points", "embedded")[0] == 403
    assert other_endpoint("POST", "/collections/items/points/delete", "embedded")[0] == 403
    assert other_endpoint("POST", "/collections/aliases", "server")[0] == 403
    assert other_endpoint("DELETE", "/collections/items", "embedded")[0] == 403
    assert other_endpoint("POST", "/collections/items/points/query/groups", "embedded")[0] == 400
    assert other_endpoint("POST", "/collections/items/facet", "embedded")[0] == 400
    assert other_endpoint("GET", "/collections/items/snapshots", "embedded")[0] == 404
    assert "embedded store" in read_only_message("embedded")
    assert "embedded" not in read_only_message("server")


def test_payload_selection_and_drop_keys() -> None:
    assert payload_selection(None) == (True, [])
    assert payload_selection(False) == (False, [])
    assert payload_selection(["a"]) == (["a"], [])
    assert payload_selection(qm.PayloadSelectorInclude(include=["a"])) == (["a"], [])
    assert payload_selection(qm.PayloadSelectorExclude(exclude=["a"])) == (True, ["a"])
    payload = {"a": 1, "m": {"x": 1, "y": None}}
    assert drop_keys(payload, ["a", "m.x", "q.r"]) == {"m": {"y": None}}
    assert payload == {"a": 1, "m": {"x": 1, "y": None}}  # not changed in place
    assert drop_keys(None, ["a"]) is None


def test_validation_summary_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        qm.QueryRequest.model_validate({"filter": {"must": [{"key": "a", "matchh": 1}]}})
    assert validation_summary(info.value).startswith("filter")
    assert parse_body(qm.CountRequest, b"  ") == qm.CountRequest()
