"""The local HTTP API served by the process that owns the store (the embed worker).

Why: qdrant-client's embedded mode locks its folder to one process. While ``interest-stream run``
(or ``embed``) runs, it owns the store, so other processes — the CLI's ``profile``,
``recommend`` and ``items load``, or an application that wants recommendations without talking
to Qdrant — ask it over HTTP instead. With a Qdrant server (``INTEREST_QDRANT_URL``) the CLI goes
to Qdrant directly.

Routes (JSON):

- ``GET /healthz``: ``{"status": "ok", "consuming": true, ...}`` (503 while not consuming)
- ``GET /metrics``: Prometheus text format
- ``GET /v1/users/{user_id}?vectors=1``: the profile (:func:`models.user_view.describe_user`),
  with ``model``: the service's model and the languages it serves
- ``DELETE /v1/users/{user_id}``: forget the user (a write): 202 with where the request was
  written on the events topic; the workers apply it in order (:mod:`streams.user_delete`)
- ``GET /v1/users/{user_id}/recommendations?limit=&dimension=&filter=k=v&diversity=``
- ``POST /v1/items?model=<name>``: body = JSON lines of catalog items → ``{"loaded": n}``; a
  ``model`` other than the service's is a 409 (items must be embedded by the users' model)
- Qdrant's read-only REST endpoints on the users and items collections (``GET /``,
  ``/collections/...``), so qdrant-client reads with ``QdrantClient(url=<this API>)``; writes
  there are refused (:mod:`streams.embed.qdrant_rest`)

Every store access goes through one single-thread executor shared with the embed loop, because
the embedded Qdrant client is not thread-safe.

Security (:class:`ApiGuard`, one middleware in front of every route but ``/healthz`` and
``/metrics``, which stay open for probes):

- a *write* is any request that is not ``GET``/``HEAD``/``OPTIONS``, except the Qdrant read
  endpoints under ``/collections`` (their ``POST`` bodies are queries; writes there are refused
  anyway). Writes need ``Authorization: Bearer <INTEREST_API_TOKEN>``; with
  ``INTEREST_API_AUTH_READS=true`` reads need it too (qdrant-client's ``api-key`` header is
  accepted as well, so ``QdrantClient(url=..., api_key=token)`` reads). No header: 401 with
  ``WWW-Authenticate: Bearer``; a wrong token: 403; compared in constant time.
- no token configured: writes are accepted while the API listens on loopback only (one machine,
  the default; whoever can reach it can open the store folder as well) and refused (403) on any
  other address.
- writes are rate limited per client address (a token bucket: ``INTEREST_API_WRITE_RATE_PER_S``,
  burst ``INTEREST_API_WRITE_BURST``; 429 with ``Retry-After``), counted before the token check
  so guessing is slow too; bodies above ``INTEREST_API_MAX_BODY_BYTES`` are a 413.

Every refusal is a JSON ``{"error": reason}``; nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from aiohttp import web

from models.catalog import InvalidItem, load_items, read_items
from models.encoder import Encoder, canonical_model_name, model_languages
from models.query_plan import parse_filter_args
from models.recommend import Recommender
from models.settings import ProfileSettings
from models.store import InterestStore
from models.user_view import describe_user
from streams.contracts.events import InvalidEvent
from streams.embed.qdrant_rest import QdrantRest
from streams.settings import ApiSettings
from streams.topics import KafkaUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

Recommend = Callable[[str, dict[str, Any]], dict[str, Any]]
#: Writes a user's delete request and says where (``streams.user_delete.DeleteReceipt``).
DeleteUser = Callable[[str], Awaitable[dict[str, Any]]]


class ApiUnavailable(RuntimeError):
    """No interest-stream API answers where the settings say; one line for the CLI."""


class ApiServer:
    """aiohttp app over the worker's store, encoder and (optional) recommender."""

    def __init__(
        self,
        settings: ApiSettings,
        store: InterestStore,
        encoder: Encoder,
        executor: Executor,
        *,
        health: Callable[[], dict[str, Any]],
        metrics: Callable[[], Awaitable[bytes]],
        ensure_collections: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.encoder = encoder
        self.executor = executor
        self.health = health
        self.metrics = metrics
        self.ensure_collections = ensure_collections
        self.recommend: Recommend = lambda user_id, options: (
            Recommender(store).recommend(user_id, **options).to_dict()
        )
        #: Writes a user's delete request (the worker's ``request_user_delete``); None: the
        #: route answers 503.
        self.delete_user: DeleteUser | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.guard = ApiGuard(settings)

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.settings.max_body_bytes, middlewares=[self.guard.middleware]
        )
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/metrics", self._metrics),
                web.get("/v1/users/{user_id}", self._profile),
                web.delete("/v1/users/{user_id}", self._delete_user),
                web.get("/v1/users/{user_id}/recommendations", self._recommend),
                web.post("/v1/items", self._items),
            ]
        )
        app.add_routes(QdrantRest(self.store, self._in_store_thread).routes())
        return app

    async def start(self) -> None:
        try:
            self.guard.load_token()
        except ValueError as exc:
            raise ApiUnavailable(str(exc)) from None
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise ApiUnavailable(
                f"cannot serve the API on {self.settings.url} ({exc.strerror}); "
                "set INTEREST_API_PORT or INTEREST_API_ENABLED=false"
            ) from exc
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self.settings.port
        log.info("API listening on http://%s:%s", self.settings.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _in_store_thread(self, fn: Callable[[], T]) -> T:
        def call() -> T:
            self.ensure_collections()  # a no-op once the embed loop or a request created them
            return fn()

        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def _healthz(self, request: web.Request) -> web.Response:
        body = self.health()
        return web.json_response(body, status=200 if body.get("status") == "ok" else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self.metrics()
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _profile(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        try:
            _check_names(request.query, PROFILE_PARAMS)
            vectors = flag_param(request.query, "vectors")
        except ValueError as exc:
            return _error(400, str(exc))
        stored = await self._in_store_thread(lambda: self.store.get_users([user_id]))
        view = describe_user(user_id, stored.get(user_id), with_vectors=vectors)
        return web.json_response({**view, "model": model_info(self.encoder.model_name)})

    async def _delete_user(self, request: web.Request) -> web.Response:
        """202 with where the request was written: it applies in order with the user's events
        (:mod:`streams.user_delete`); the profile answers "no profile yet" once it has."""
        user_id = request.match_info["user_id"]
        try:
            _check_names(request.query, ())
        except ValueError as exc:
            return _error(400, str(exc))
        if self.delete_user is None:
            return _error(503, "this API has no Kafka connection to write a delete request")
        try:
            receipt = await self.delete_user(user_id)
        except InvalidEvent as exc:
            return _error(400, exc.detail)
        except KafkaUnavailable as exc:
            return _error(503, str(exc).partition("\n")[0])
        return web.json_response({**receipt, "status": "accepted"}, status=202)

    async def _recommend(self, request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        try:
            options = recommend_options(request.query)
        except ValueError as exc:
            return _error(400, str(exc))
        recommend = self.recommend
        try:
            result = await self._in_store_thread(lambda: recommend(user_id, options))
        except ValueError as exc:  # e.g. an unknown dimension
            return _error(400, str(exc))
        return web.json_response(result)

    async def _items(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            _check_names(request.query, ITEMS_PARAMS)
            wanted = _single(request.query, "model")
            catalog = list(read_items(body.splitlines(), "body"))
        except (InvalidItem, ValueError) as exc:
            return _error(400, str(exc))
        mine = self.encoder.model_name
        if wanted is not None and canonical_model_name(wanted) != canonical_model_name(mine):
            return _error(409, model_mismatch(mine, wanted))
        count = await self._in_store_thread(lambda: load_items(catalog, self.encoder, self.store))
        return web.json_response({"loaded": count})


#: Routes that answer without a token (liveness/readiness probes, Prometheus).
OPEN_PATHS = frozenset({"/healthz", "/metrics"})
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_write(request: web.Request) -> bool:
    """A request that may change the store: not a GET, and not a Qdrant read endpoint's POST."""
    if request.method in _READ_METHODS:
        return False
    return not (request.path == "/" or request.path.startswith("/collections"))


class ApiGuard:
    """Token, body-size and write-rate checks in front of every route (module docstring)."""

    def __init__(self, settings: ApiSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._token: bytes | None = None
        self._buckets: dict[str, tuple[float, float]] = {}

    def load_token(self) -> None:
        """Read the token once (restart to rotate it); ValueError with one line if unusable."""
        token = self.settings.bearer_token()
        if token is None and self.settings.auth_reads:
            raise ValueError(
                "INTEREST_API_AUTH_READS=true needs INTEREST_API_TOKEN or INTEREST_API_TOKEN_FILE"
            )
        self._token = token.encode() if token is not None else None
        if token is None and not self.settings.loopback_only:
            log.warning(
                "no INTEREST_API_TOKEN on %s: the API refuses every write", self.settings.host
            )

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        write = is_write(request)
        refusal = self._rate_limit(request) if write else None
        if refusal is None and (write or self.settings.auth_reads):
            refusal = self._check_token(request, write)
        if refusal is None:
            refusal = self._check_size(request)
        if refusal is not None:
            return refusal
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return self._too_large()

    def _check_token(self, request: web.Request, write: bool) -> web.Response | None:
        if self._token is None:
            if write and not self.settings.loopback_only:
                return _error(
                    403,
                    f"writes are refused: no INTEREST_API_TOKEN is configured and the API "
                    f"listens on {self.settings.host}, not only on loopback",
                )
            return None
        given = _presented_token(request)
        if given is None:
            response = _error(401, "this route needs a token: send Authorization: Bearer <token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="interest-stream"'
            return response
        if not hmac.compare_digest(given.encode(), self._token):
            return _error(403, "the token is not valid for this API")
        return None

    def _check_size(self, request: web.Request) -> web.Response | None:
        length = request.content_length
        if length is not None and length > self.settings.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> web.Response:
        limit = self.settings.max_body_bytes
        return _error(
            413, f"the body is larger than {limit} bytes (INTEREST_API_MAX_BODY_BYTES); split it"
        )

    def _rate_limit(self, request: web.Request) -> web.Response | None:
        """A token bucket per client address; a 429 with Retry-After when it is empty."""
        rate, burst = self.settings.write_rate_per_s, float(self.settings.write_burst)
        now = self.clock()
        key = request.remote or "?"
        tokens, last = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - last) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / rate)
            response = _error(429, f"too many writes from {key}; retry in {wait} s")
            response.headers["Retry-After"] = str(wait)
            return response
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 10_000:  # forget clients whose bucket has refilled
            self._buckets = {
                k: v for k, v in self._buckets.items() if v[0] + (now - v[1]) * rate < burst
            }
        return None


def _presented_token(request: web.Request) -> str | None:
    """The token a request carries: ``Authorization: Bearer`` or qdrant-client's ``api-key``."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    api_key = request.headers.get("api-key", "").strip()
    return api_key or None


#: Query parameters each route takes; any other is a 400 naming these (a misspelt ``limt``
#: would otherwise be ignored in silence).
RECOMMEND_PARAMS = ("limit", "dimension", "filter", "diversity", "include_recent")
PROFILE_PARAMS = ("vectors",)
ITEMS_PARAMS = ("model",)
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
MAX_LIMIT = 1000


def recommend_options(query: Any) -> dict[str, Any]:
    """Query-string parameters of the recommendations route as keyword arguments.

    ValueError with a sentence for people (the API answers it as a 400) for an unknown
    parameter, a repeated one, or a value that is not what the parameter takes.
    """
    _check_names(query, RECOMMEND_PARAMS)
    options: dict[str, Any] = {}
    limit = _single(query, "limit")
    if limit is not None:
        options["limit"] = _whole_number("limit", limit, 1, MAX_LIMIT)
    dims = _values(query, "dimension")
    if dims:
        options["dimensions"] = check_dimensions(dims)
    filters = _values(query, "filter")
    if filters:
        options["filters"] = parse_filter_args(filters)
    diversity = _single(query, "diversity")
    if diversity is not None:
        options["diversity"] = _number("diversity", diversity, 0.0, 1.0)
    if flag_param(query, "include_recent"):
        options["exclude_recent"] = False
    return options


def flag_param(query: Any, name: str) -> bool:
    """A yes/no parameter: 1/true/yes or 0/false/no (absent: no); ValueError otherwise."""
    value = _single(query, name)
    if value is None:
        return False
    flag = _FLAGS.get(value.strip().lower())
    if flag is None:
        raise ValueError(f"{name} must be 1/true/yes or 0/false/no, got {value!r}")
    return flag


def _values(query: Any, name: str) -> list[str]:
    if hasattr(query, "getall"):
        return list(query.getall(name, []))
    return [query[name]] if name in query else []


def _single(query: Any, name: str) -> str | None:
    values = _values(query, name)
    if len(values) > 1:
        raise ValueError(f"{name} is given {len(values)} times; give it once")
    return values[0] if values else None


def _check_names(query: Any, known: Sequence[str]) -> None:
    unknown = sorted(set(query.keys()) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}; this route takes {', '.join(known)}")


def _whole_number(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(
            f"{name} must be a whole number from {low} to {high}, got {value!r}"
        ) from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be from {low} to {high}, got {number}")
    return number


def _number(name: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return number


def check_dimensions(names: Sequence[str]) -> list[str]:
    """Dimension names a recommendation may use; ValueError naming the known ones otherwise.

    The known names follow ``INTEREST_PROFILE_CLUSTER_K`` (``interest_0`` .. ``interest_{K-1}``).
    """
    known = (*_vector_names(), "interests")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown dimension {unknown[0]!r}; choose from {', '.join(known)}")
    return list(names)


@functools.cache
def _vector_names() -> tuple[str, ...]:
    return tuple(ProfileSettings().spec().vector_names())


def model_info(name: str) -> dict[str, str]:
    """The ``model`` part of a profile: the model's name and the languages it serves."""
    return {"name": name, "languages": model_languages(name)}


def model_mismatch(service: str, cli: str) -> str:
    """The one line a CLI gets when it would load items with another model than the service's."""
    return (
        f"the running service embeds with model {service!r} but this command's "
        f"INTEREST_MODEL_NAME is {cli!r}; items and users must share one model — unset it here, "
        f"or stop the service and start it with INTEREST_MODEL_NAME={cli}"
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class ApiClient:
    """Blocking client for the CLI (stdlib only, so the CLI starts fast)."""

    def __init__(self, settings: ApiSettings) -> None:
        self.settings = settings

    def _headers(self, body: bytes | None) -> dict[str, str]:
        """The token from the same settings as the server's (so ``items load`` works with it)."""
        headers = {"Content-Type": "application/x-ndjson"} if body is not None else {}
        token = self.settings.bearer_token()
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _call(self, method: str, path: str, body: bytes | None = None) -> Any:
        """One request; a 429 is retried after its Retry-After (up to 5 times, 30 s each)."""
        for _attempt in range(5):
            try:
                return self._once(method, path, body)
            except _RetryLater as later:
                time.sleep(later.seconds)
        return self._once(method, path, body)

    def _once(self, method: str, path: str, body: bytes | None) -> Any:
        request = urllib.request.Request(
            self.settings.url + path, data=body, method=method, headers=self._headers(body)
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            retry_after = exc.headers.get("Retry-After", "")
            if exc.code == 429 and retry_after.isdigit():
                raise _RetryLater(min(30, int(retry_after))) from None
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                detail = json.loads(detail).get("error", detail)
            message = f"the API at {self.settings.url} answered {exc.code}: {detail}"
            raise ApiUnavailable(message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiUnavailable(
                f"no interest-stream API answers at {self.settings.url} ({reason})"
            ) from None

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/healthz")
        return result

    def profile(self, user_id: str, vectors: bool = False) -> dict[str, Any]:
        path = f"/v1/users/{urllib.parse.quote(user_id, safe='')}"
        result: dict[str, Any] = self._call("GET", path + ("?vectors=1" if vectors else ""))
        return result

    def recommend(self, user_id: str, query: list[tuple[str, str]]) -> dict[str, Any]:
        path = f"/v1/users/{urllib.parse.quote(user_id, safe='')}/recommendations"
        if query:
            path += "?" + urllib.parse.urlencode(query)
        result: dict[str, Any] = self._call("GET", path)
        return result

    def load_items(self, body: bytes, model: str | None = None) -> int:
        """POST the catalog; with ``model`` the service refuses (409) if it embeds with another.

        A catalog larger than ``INTEREST_API_MAX_BODY_BYTES`` goes in several requests, split
        between lines (the caller validated every line first, so none is refused halfway).
        """
        path = "/v1/items" + ("?" + urllib.parse.urlencode({"model": model}) if model else "")
        chunks = split_lines(body, self.settings.max_body_bytes)
        return sum(int(self._call("POST", path, chunk)["loaded"]) for chunk in chunks)


class _RetryLater(Exception):
    """A 429 the client waits out."""

    def __init__(self, seconds: int) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def split_lines(body: bytes, limit: int) -> Iterator[bytes]:
    """``body`` in pieces of at most ``limit`` bytes, each cut after a newline.

    A single line longer than ``limit`` goes alone (the server answers it 413, naming the limit).
    """
    start = 0
    while len(body) - start > limit:
        cut = body.rfind(b"\n", start, start + limit)
        if cut < start:
            newline = body.find(b"\n", start + limit)
            cut = len(body) - 1 if newline < 0 else newline
        yield body[start : cut + 1]
        start = cut + 1
    if start < len(body) or not body:
        yield body[start:]
