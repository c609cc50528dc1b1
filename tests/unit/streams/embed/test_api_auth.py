"""The HTTP API's guard, asked over HTTP of a real server as the CLI and applications ask: no write
without the token (401 without one, 403 with a wrong one, each with a JSON reason), reads open
unless INTEREST_API_AUTH_READS says otherwise, probes always open, and body-size and write-rate
limits that refuse with a reason and write nothing."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import EdgeStoreFactory

from models.encoder import Encoder
from models.settings import ProfileSettings, QdrantSettings
from streams.embed.api import ApiClient, ApiServer, ApiUnavailable
from streams.embed.store_access import StoreAccess
from streams.settings import ApiSettings

TOKEN = "s3cret-token-for-tests"
Serve = Callable[..., ApiSettings]
Answer = tuple[int, dict[str, str], dict[str, Any]]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(device="cpu", batch_size=8, cache_size=100).load()


@pytest.fixture
def serve(edge_store: EdgeStoreFactory, encoder: Encoder) -> Iterator[Serve]:
    """``serve(**api_settings)``: a real API over an embedded store on a free port; returns the
    settings a client on this machine uses (the same ones, with the port it got)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    executor = ThreadPoolExecutor(1)
    servers: list[ApiServer] = []

    async def metrics() -> bytes:
        return b"# metrics\n"

    def start(**settings: Any) -> ApiSettings:
        store = edge_store(encoder.dimension, folder=f"qdrant{len(servers)}")
        store.ensure_collections(encoder.dimension, ProfileSettings().spec().vector_names())
        server = ApiServer(
            ApiSettings(port=0, **settings), store, encoder, executor,
            health=lambda: {"status": "ok"}, metrics=metrics, ensure_collections=lambda: None,
        )  # fmt: skip
        servers.append(server)
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
        return ApiSettings(**{**settings, "host": "127.0.0.1", "port": server.port})

    yield start
    for server in servers:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    executor.shutdown()


def call(
    api: ApiSettings, method: str, path: str, body: bytes | None = None, token: str | None = None
) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(api.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def item(n: int, pad: int = 0) -> bytes:
    return json.dumps({"id": f"i{n}", "text": f"an article about topic {n} " + "x" * pad}).encode()


def item_count(api: ApiSettings, token: str | None = None) -> int:
    """How many items the store holds, read through the API's Qdrant count endpoint."""
    status, _, body = call(api, "POST", "/collections/items/points/count", b"{}", token)
    assert status == 200, body
    return int(body["result"]["count"])


def test_a_write_needs_the_token(serve: Serve) -> None:
    api = serve(token=TOKEN)
    status, headers, body = call(api, "POST", "/v1/items", item(1))
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "needs a token" in body["error"]
    status, headers, body = call(api, "POST", "/v1/items", item(1), token="guess")
    assert (status, body) == (403, {"error": "the token is not valid for this API"})
    assert "WWW-Authenticate" not in headers
    assert item_count(api) == 0  # nothing written by the refused requests
    assert call(api, "POST", "/v1/items", item(1), token=TOKEN)[::2] == (200, {"loaded": 1})
    assert item_count(api) == 1
    # reads stay open by default; the probes always are
    assert call(api, "GET", "/v1/users/u1")[0] == 200
    assert call(api, "GET", "/healthz")[0] == 200


def test_reads_need_the_token_when_the_setting_says(serve: Serve, tmp_path: Path) -> None:
    secret = tmp_path / "api-token"
    secret.write_text(TOKEN + "\n")
    api = serve(token_file=secret, auth_reads=True)
    assert call(api, "GET", "/v1/users/u1")[0] == 401
    assert call(api, "GET", "/v1/users/u1/recommendations", token="nope")[0] == 403
    assert call(api, "POST", "/collections/items/points/count", b"{}")[0] == 401
    assert call(api, "GET", "/v1/users/u1", token=TOKEN)[0] == 200
    assert item_count(api, TOKEN) == 0
    # qdrant-client's own header (QdrantClient(url=..., api_key=token)) is accepted too
    request = urllib.request.Request(api.url + "/collections", headers={"api-key": TOKEN})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
    status, _, _ = call(api, "GET", "/healthz")
    assert status == 200
    with urllib.request.urlopen(api.url + "/metrics", timeout=30) as resp:
        assert resp.status == 200


def test_the_token_never_shows_in_the_settings(tmp_path: Path) -> None:
    settings = ApiSettings(token=TOKEN)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())
    assert settings.bearer_token() == TOKEN
    secret = tmp_path / "token"
    secret.write_text("from-the-file\n")
    assert ApiSettings(token=TOKEN, token_file=secret).bearer_token() == "from-the-file"


def test_an_unusable_token_setting_stops_the_server_with_one_line(
    serve: Serve, tmp_path: Path
) -> None:
    with pytest.raises(ApiUnavailable, match=r"INTEREST_API_TOKEN_FILE=.*missing: cannot read it"):
        serve(token_file=tmp_path / "missing")
    with pytest.raises(ApiUnavailable, match="INTEREST_API_AUTH_READS=true needs"):
        serve(auth_reads=True)


def test_without_a_token_only_a_loopback_api_takes_writes(serve: Serve) -> None:
    local = serve()
    assert call(local, "POST", "/v1/items", item(1))[::2] == (200, {"loaded": 1})
    public = serve(host="0.0.0.0")  # every address; the test reaches it on 127.0.0.1
    status, _, body = call(public, "POST", "/v1/items", item(1))
    assert status == 403 and "no INTEREST_API_TOKEN is configured" in body["error"]
    assert item_count(public) == 0
    assert call(public, "GET", "/v1/users/u1")[0] == 200


def test_bad_json_is_a_400_and_writes_nothing(serve: Serve) -> None:
    api = serve(token=TOKEN)
    status, _, body = call(api, "POST", "/v1/items", item(1) + b"\n{not json\n", token=TOKEN)
    assert status == 400 and body["error"].startswith("body:2: not JSON")
    status, _, body = call(api, "POST", "/v1/items?modle=x", item(1), token=TOKEN)
    assert status == 400 and "unknown parameter 'modle'" in body["error"]
    assert item_count(api) == 0


def test_a_body_over_the_limit_is_a_413(serve: Serve) -> None:
    api = serve(token=TOKEN, max_body_bytes=2048)
    status, _, body = call(api, "POST", "/v1/items", item(1, pad=4000), token=TOKEN)
    assert status == 413 and "larger than 2048 bytes" in body["error"]
    assert item_count(api) == 0


def test_writes_beyond_the_rate_are_a_429_with_retry_after(serve: Serve) -> None:
    api = serve(token=TOKEN, write_rate_per_s=0.01, write_burst=2)
    assert call(api, "POST", "/v1/items", b"{", token=TOKEN)[0] == 400
    assert call(api, "POST", "/v1/items", b"{", token="wrong")[0] == 403  # guesses count too
    status, headers, body = call(api, "POST", "/v1/items", item(1), token=TOKEN)
    assert status == 429 and "too many writes" in body["error"]
    assert int(headers["Retry-After"]) == 100
    assert item_count(api) == 0
    assert call(api, "GET", "/v1/users/u1")[0] == 200  # reads are not limited


def test_the_cli_client_sends_the_token_from_its_settings(serve: Serve) -> None:
    api = serve(token=TOKEN, max_body_bytes=2048)
    catalog = b"\n".join(item(n, pad=800) for n in range(5)) + b"\n"
    assert len(catalog) > 2048  # so the client splits it to fit the limit
    assert ApiClient(api).load_items(catalog) == 5
    assert item_count(api) == 5
    anonymous = api.model_copy(update={"token": None})
    with pytest.raises(ApiUnavailable, match="answered 401: this route needs a token"):
        ApiClient(anonymous).load_items(item(9))
    wrong = api.model_copy(update={"token": ApiSettings(token="other").token})
    with pytest.raises(ApiUnavailable, match="answered 403: the token is not valid"):
        ApiClient(wrong).load_items(item(9))
    assert item_count(api) == 5


def test_items_load_through_the_running_service_sends_the_environments_token(
    serve: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's ``items load`` path: the store folder is held by the service, so the command
    asks its API, with the token from the same ``INTEREST_API_*`` settings the service reads."""
    api = serve(token=TOKEN)
    monkeypatch.setenv("INTEREST_API_TOKEN", TOKEN)
    monkeypatch.setenv("INTEREST_API_PORT", str(api.port))
    access = StoreAccess(QdrantSettings(path=tmp_path / "qdrant0", url=None), ApiSettings())
    assert access.load_items(item(1) + b"\n" + item(2), "catalog.jsonl") == 2
    assert item_count(api) == 2
    monkeypatch.delenv("INTEREST_API_TOKEN")
    access = StoreAccess(QdrantSettings(path=tmp_path / "qdrant0", url=None), ApiSettings())
    with pytest.raises(ApiUnavailable, match="answered 401"):
        access.load_items(item(3), "catalog.jsonl")
