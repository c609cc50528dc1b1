"""Qdrant's read-only REST endpoints, answered by the service over its own store.

Why: the embedded store belongs to the one process that runs it (a folder lock), so nobody else
can open it — not even qdrant-client. The service therefore also speaks the part of Qdrant's
REST API that qdrant-client uses for reads, on its own HTTP port, so that

    QdrantClient(url="http://127.0.0.1:8765").query_points("items", query=[...])

works the same as against a Qdrant server, whatever the backend (embedded or a server: the
store's backend answers, this module only maps HTTP to it).

Served, for the users and items collections only (others: 404, as a server answers):

- ``GET /`` (version: the server check qdrant-client does at construction),
- ``GET /collections``, ``GET /collections/{c}``, ``GET /collections/{c}/exists``,
- ``POST /collections/{c}/points`` (retrieve), ``GET /collections/{c}/points/{id}``,
- ``POST /collections/{c}/points/query`` and ``.../query/batch``,
- ``POST /collections/{c}/points/scroll`` (``order_by`` too), ``POST .../points/count``.

Bodies are parsed with qdrant-client's own models (``QueryRequest``, ``PointRequest`` ...) and
results written as the server writes them: ``{"result": ..., "status": "ok", "time": s}``;
errors as ``{"status": {"error": "..."}, "time": s}`` — 404 for an unknown collection or point,
400 for a body that does not parse or asks for what the engine cannot do (the reason named),
403 for every write (``PUT``/``PATCH``/``DELETE``, or a ``POST`` that is not a read): points
change only through interest-stream's own paths (events, ``items load``), which keep the
payload fields and the popularity the workers maintain consistent.

Every store call runs through the caller's single store thread (``in_store_thread``); the rest
(parsing, serialising) stays on the event loop.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from qdrant_client.http import models as qm
from qdrant_client.http.exceptions import UnexpectedResponse

from models.store import (
    CollectionNotFound,
    EngineError,
    InterestStore,
    StoreBackend,
    StoreError,
    UnsupportedRequest,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_LIMIT: Final = 10
"""A scroll's page size when the body names none (the server's default)."""

SERVED: Final = (
    "GET /collections/{c}, GET /collections/{c}/exists, POST /collections/{c}/points, "
    "GET /collections/{c}/points/{id}, POST /collections/{c}/points/query, "
    "POST /collections/{c}/points/query/batch, POST /collections/{c}/points/scroll, "
    "POST /collections/{c}/points/count"
)

# Reads a Qdrant server answers that this API does not (a POST that is not a write).
_UNSERVED_READ: Final = re.compile(
    r"^/collections/[^/]+/(points/(search|recommend|discover)(/batch|/groups|/matrix/\w+)?"
    r"|points/query/groups|facet)/?$"
)

Op = Callable[[StoreBackend, str], Any]
"""A read on one collection, run in the store thread: ``op(backend, collection)``."""


class InStoreThread(Protocol):
    """Runs ``fn`` in the single store thread and returns its result (``ApiServer``'s)."""

    def __call__(self, fn: Callable[[], T]) -> Awaitable[T]: ...


class RestError(Exception):
    """A request this API answers with an error status and a one-line reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- envelopes and JSON --------------------------------------------------------------------------


def to_json(value: Any) -> Any:
    """qdrant-client models (and lists/dicts of them) as JSON values, with the fields the backend
    set (None included: a field whose default is not None must stay None on the client's side)
    and without those it left at their defaults, so qdrant-client reads back the same model."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def ok(result: Any, started: float) -> web.Response:
    """The server's success envelope."""
    body = {"result": to_json(result), "status": "ok", "time": time.perf_counter() - started}
    return web.json_response(body)


def failed(status: int, message: str, started: float) -> web.Response:
    """The server's error envelope (qdrant-client raises ``UnexpectedResponse`` with it)."""
    body = {"status": {"error": message}, "time": time.perf_counter() - started}
    return web.json_response(body, status=status)


def version_info(kind: str) -> dict[str, Any]:
    """``GET /``. The version is that of the qdrant-client whose REST model this API speaks, so
    the same qdrant-client (and its neighbours) pass the compatibility check without a warning.
    """
    return {
        "title": f"interest-stream ({kind} store, read-only Qdrant REST)",
        "version": importlib.metadata.version("qdrant-client"),
    }


def read_only_message(kind: str) -> str:
    """Why a write is refused, and where writes go instead."""
    where = "the embedded store" if kind == "embedded" else "the store"
    return (
        f"read-only: this endpoint serves reads of {where}; write through interest-stream "
        "(events, `items load`)"
    )


def not_found(collection: str, served: Sequence[str]) -> str:
    """The server's wording for an unknown collection, plus what this API serves."""
    return f"Not found: Collection `{collection}` doesn't exist! (served here: {', '.join(served)})"


# -- request bodies ------------------------------------------------------------------------------


def parse_body(model: type[M], raw: bytes) -> M:
    """A request body as qdrant-client's model (an empty body is ``{}``); RestError 400 else."""
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RestError(400, f"Format error in JSON body: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise RestError(400, f"Format error in JSON body: {validation_summary(exc)}") from None


def validation_summary(exc: ValidationError) -> str:
    """The first problem of a body in one line.

    A field with a union type (``query``, a filter condition ...) yields one error per variant;
    those are summed up at the place they share rather than by the first variant's complaint.
    """
    errors = exc.errors()
    if not errors:
        return "invalid body"
    first = errors[0]
    top = first["loc"][:1]
    same = [e["loc"] for e in errors if e["loc"][:1] == top]
    if len(same) == 1:
        return f"{_loc(first['loc'])}: {first['msg']}"
    shared: list[Any] = []
    for parts in zip(*same, strict=False):
        if any(p != parts[0] for p in parts):
            break
        shared.append(parts[0])
    return (
        f"{_loc(tuple(shared))}: matches none of the forms Qdrant accepts ({len(errors)} problems)"
    )


def _loc(loc: Sequence[Any]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def point_id_of(raw: str) -> int | str:
    """A point id from a URL: an unsigned integer, else the string (a UUID)."""
    return int(raw) if raw.isdigit() else raw


def point_ids(raw: Sequence[qm.ExtendedPointId]) -> list[Any]:
    """Point ids for the backend: integers stay integers (both backends take them, as a server
    does, although the interface spells ids as the strings the store writes), UUIDs strings."""
    return [_point_id(i) for i in raw]


def _point_id(raw: qm.ExtendedPointId) -> int | str:
    return raw if isinstance(raw, int) else str(raw)


def payload_selection(w: qm.WithPayloadInterface | None) -> tuple[bool | list[str], list[str]]:
    """``with_payload`` for the backend (bool or keys, default all) and the keys to drop after
    (an exclude selector, which the backend interface does not take)."""
    if w is None:
        return True, []
    if isinstance(w, bool):
        return w, []
    if isinstance(w, qm.PayloadSelectorInclude):
        return [str(k) for k in w.include], []
    if isinstance(w, qm.PayloadSelectorExclude):
        return True, [str(k) for k in w.exclude]
    return [str(k) for k in w], []


def drop_keys(payload: dict[str, Any] | None, keys: Sequence[str]) -> dict[str, Any] | None:
    """``payload`` without ``keys`` (dotted keys reach into nested objects); a copy."""
    if payload is None or not keys:
        return payload
    out = json.loads(json.dumps(payload))  # deep copy of JSON values
    for key in keys:
        *path, last = key.split(".")
        node: Any = out
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    result: dict[str, Any] = out
    return result


def _no_shard_key(shard_key: Any) -> None:
    if shard_key is not None:
        raise RestError(400, "Bad request: shard keys are not supported here")


# -- reads (run in the store thread) -------------------------------------------------------------


def query_points(backend: StoreBackend, collection: str, r: qm.QueryRequest) -> qm.QueryResponse:
    """``POST /collections/{c}/points/query``: the backend takes the whole request."""
    return qm.QueryResponse(points=backend.query(collection, r))


def retrieve_points(backend: StoreBackend, collection: str, r: qm.PointRequest) -> list[qm.Record]:
    """``POST /collections/{c}/points``: points by id, in the order found."""
    _no_shard_key(r.shard_key)
    with_payload, exclude = payload_selection(r.with_payload)
    with_vectors = False if r.with_vector is None else r.with_vector
    records = backend.retrieve(
        collection, point_ids(r.ids), with_payload=with_payload, with_vectors=with_vectors
    )
    for rec in records:
        rec.payload = drop_keys(rec.payload, exclude)
    return records


def scroll_points(backend: StoreBackend, collection: str, r: qm.ScrollRequest) -> qm.ScrollResult:
    """``POST /collections/{c}/points/scroll``: a page in id order and the id to go on from,
    or (``order_by``) a page ordered by a payload field, without a next offset, as a server."""
    _no_shard_key(r.shard_key)
    limit = DEFAULT_LIMIT if r.limit is None else r.limit
    if r.order_by is not None:
        return _scroll_ordered(backend, collection, r, limit)
    with_payload, exclude = payload_selection(r.with_payload)
    records, next_offset = backend.scroll(
        collection,
        limit=limit,
        offset=None if r.offset is None else _point_id(r.offset),
        query_filter=r.filter,
        with_payload=with_payload,
        with_vectors=False if r.with_vector is None else r.with_vector,
    )
    for rec in records:
        rec.payload = drop_keys(rec.payload, exclude)
    return qm.ScrollResult(points=records, next_page_offset=next_offset)


def _scroll_ordered(
    backend: StoreBackend, collection: str, r: qm.ScrollRequest, limit: int
) -> qm.ScrollResult:
    """A scroll with ``order_by`` is an order-by query (the backend interface's scroll has no
    order); the records carry their ``order_value``."""
    if r.offset is not None:
        raise RestError(
            400,
            "Bad request: cannot use an `offset` with `order_by`; page with "
            "`order_by.start_from` and a filter excluding the ids already seen",
        )
    assert r.order_by is not None
    request = qm.QueryRequest(
        query=qm.OrderByQuery(order_by=r.order_by),
        filter=r.filter,
        limit=limit,
        with_payload=True if r.with_payload is None else r.with_payload,
        with_vector=False if r.with_vector is None else r.with_vector,
    )
    points = backend.query(collection, request)
    records = [
        qm.Record(id=p.id, payload=p.payload, vector=p.vector, order_value=p.order_value)
        for p in points
    ]
    return qm.ScrollResult(points=records, next_page_offset=None)


def count_points(backend: StoreBackend, collection: str, r: qm.CountRequest) -> qm.CountResult:
    """``POST /collections/{c}/points/count`` (always exact: the engine counts exactly)."""
    _no_shard_key(r.shard_key)
    return qm.CountResult(count=backend.count(collection, r.filter))


def get_point(backend: StoreBackend, collection: str, raw_id: str) -> qm.Record:
    """``GET /collections/{c}/points/{id}``: one point with its payload and vectors."""
    found = backend.retrieve(
        collection, point_ids([point_id_of(raw_id)]), with_payload=True, with_vectors=True
    )
    if not found:
        raise RestError(404, f"Not found: No point with id {raw_id} found")
    return found[0]


# -- errors and the refused/unknown endpoints ----------------------------------------------------


def error_of(exc: Exception) -> tuple[int, str]:
    """The status and message a failed read answers with."""
    if isinstance(exc, RestError):
        return exc.status, exc.message
    if isinstance(exc, CollectionNotFound):
        return 404, f"Not found: {exc}"
    if isinstance(exc, UnsupportedRequest):
        return 400, f"Bad request: {exc} (not supported by this store's engine)"
    if isinstance(exc, EngineError | ValueError):
        return 400, f"Bad request: {exc}"
    if isinstance(exc, UnexpectedResponse):  # a Qdrant server behind the store answered
        message = exc.content.decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            message = str(json.loads(message)["status"]["error"])
        return exc.status_code or 502, message
    if isinstance(exc, StoreError):
        return 500, f"Service internal error: {exc}"
    log.exception("Qdrant REST read failed", exc_info=exc)
    return 500, f"Service internal error: {type(exc).__name__}: {exc}"


def other_endpoint(method: str, path: str, kind: str) -> tuple[int, str]:
    """What a request under ``/collections`` that no read route took is answered.

    ``PUT``/``PATCH``/``DELETE`` and any ``POST`` that is not a Qdrant read are writes: 403.
    A Qdrant read this API does not serve: 400 naming what it serves. Anything else: 404.
    """
    if method in {"PUT", "PATCH", "DELETE"}:
        return 403, read_only_message(kind)
    if method == "POST":
        if _UNSERVED_READ.match(path):
            return 400, f"Bad request: {method} {path} is not served here; served: {SERVED}"
        return 403, read_only_message(kind)
    return 404, f"Not found: {method} {path} is not served here; served: {SERVED}"


# -- aiohttp -------------------------------------------------------------------------------------


class QdrantRest:
    """The route handlers, over a store and the thread its every call must run in."""

    def __init__(self, store: InterestStore, in_store_thread: InStoreThread) -> None:
        self.store = store
        self.in_store_thread = in_store_thread

    @property
    def served(self) -> tuple[str, str]:
        return self.store.users_collection, self.store.items_collection

    def routes(self) -> list[web.RouteDef]:
        """The routes to add to the app, the catch-all for writes and the unknown last."""
        c = "/collections/{collection}"
        return [
            web.get("/", self._root),
            web.get("/collections", self._collections),
            web.get(c, self._info),
            web.get(c + "/exists", self._exists),
            web.post(c + "/points", self._body(qm.PointRequest, retrieve_points)),
            web.get(c + "/points/{id}", self._get_point),
            web.post(c + "/points/query", self._body(qm.QueryRequest, query_points)),
            web.post(c + "/points/query/batch", self._body(qm.QueryRequestBatch, _batch)),
            web.post(c + "/points/scroll", self._body(qm.ScrollRequest, scroll_points)),
            web.post(c + "/points/count", self._body(qm.CountRequest, count_points)),
            web.route("*", "/collections{tail:.*}", self._other),
        ]

    async def serve(self, request: web.Request, op: Op) -> web.Response:
        """Run ``op`` on the request's collection in the store thread, in an envelope."""
        started = time.perf_counter()
        try:
            collection = request.match_info["collection"]
            if collection not in self.served:
                raise RestError(404, not_found(collection, self.served))
            backend = self.store.backend
            result = await self.in_store_thread(lambda: op(backend, collection))
        except Exception as exc:
            return failed(*error_of(exc), started)
        return ok(result, started)

    def _body(
        self, model: type[M], read: Callable[[StoreBackend, str, M], Any]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A handler that parses the body as ``model`` and runs ``read`` with it."""

        async def handler(request: web.Request) -> web.Response:
            started = time.perf_counter()
            try:
                body = parse_body(model, await request.read())
            except RestError as exc:
                return failed(exc.status, exc.message, started)
            return await self.serve(request, lambda b, c: read(b, c, body))

        return handler

    async def _root(self, request: web.Request) -> web.Response:
        return web.json_response(version_info(self.store.backend.kind))

    async def _collections(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        backend = self.store.backend

        def existing() -> list[str]:
            return [c for c in self.served if backend.collection_exists(c)]

        try:
            names = await self.in_store_thread(existing)
        except Exception as exc:
            return failed(*error_of(exc), started)
        return ok({"collections": [{"name": n} for n in names]}, started)

    async def _info(self, request: web.Request) -> web.Response:
        return await self.serve(request, lambda b, c: b.info(c))

    async def _exists(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        collection = request.match_info["collection"]
        if collection not in self.served:  # as far as this API goes, it does not
            return ok({"exists": False}, started)
        return await self.serve(request, lambda b, c: {"exists": b.collection_exists(c)})

    async def _get_point(self, request: web.Request) -> web.Response:
        raw_id = request.match_info["id"]
        return await self.serve(request, lambda b, c: get_point(b, c, raw_id))

    async def _other(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        status, message = other_endpoint(request.method, request.path, self.store.backend.kind)
        return failed(status, message, started)


def _batch(
    backend: StoreBackend, collection: str, r: qm.QueryRequestBatch
) -> list[qm.QueryResponse]:
    """``POST /collections/{c}/points/query/batch``: each search in turn, one store call."""
    return [query_points(backend, collection, s) for s in r.searches]
