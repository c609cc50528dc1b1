"""The API's answers to parameters it cannot use: a 400 with a sentence a person can act on
(``?limit=abc`` used to answer "invalid literal for int() with base 10: 'abc'"), never a silently
ignored misspelt parameter. Asked over HTTP of a real server, as the CLI and applications ask."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import EdgeStoreFactory
from multidict import MultiDict

from models.encoder import Encoder
from models.settings import ProfileSettings
from streams.embed.api import ApiClient, ApiServer, ApiUnavailable, recommend_options
from streams.settings import ApiSettings


def options(query: str) -> dict[str, object]:
    pairs = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    return recommend_options(MultiDict(pairs))


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("limit=abc", "limit must be a whole number from 1 to 1000, got 'abc'"),
        ("limit=0", "limit must be from 1 to 1000, got 0"),
        ("limit=1001", "limit must be from 1 to 1000, got 1001"),
        ("limit=2.5", "limit must be a whole number from 1 to 1000, got '2.5'"),
        ("limit=5&limit=6", "limit is given 2 times; give it once"),
        ("diversity=abc", "diversity must be a number from 0 to 1, got 'abc'"),
        ("diversity=nan", "diversity must be a number from 0 to 1, got 'nan'"),
        ("diversity=1.5", "diversity must be a number from 0 to 1, got '1.5'"),
        ("include_recent=maybe", "include_recent must be 1/true/yes or 0/false/no, got 'maybe'"),
        (
            "limt=5",
            "unknown parameter 'limt'; this route takes limit, dimension, filter, diversity, "
            "include_recent",
        ),
    ],
)
def test_a_parameter_it_cannot_use_is_explained(query: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        options(query)
    assert str(info.value) == message


def test_good_parameters_become_options() -> None:
    assert options("limit= 40 &diversity=0.3&include_recent=yes&dimension=short_term") == {
        "limit": 40,
        "diversity": 0.3,
        "exclude_recent": False,
        "dimensions": ["short_term"],
    }
    assert options("include_recent=0") == {}


@pytest.fixture
def api(edge_store: EdgeStoreFactory) -> Iterator[ApiSettings]:
    """A real API server over an embedded store (its own loop, in a thread), on a free port."""
    store = edge_store(8)
    store.ensure_collections(8, ProfileSettings().spec().vector_names())
    executor = ThreadPoolExecutor(1)
    loop = asyncio.new_event_loop()

    async def metrics() -> bytes:
        return b""

    server = ApiServer(
        ApiSettings(port=0), store, Encoder(), executor,
        health=lambda: {"status": "ok"}, metrics=metrics, ensure_collections=lambda: None,
    )  # fmt: skip
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=30)
    yield ApiSettings(port=server.port or 0)
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    executor.shutdown()


def get(api: ApiSettings, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(api.url + path, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_api_answers_400_with_the_reason(api: ApiSettings) -> None:
    assert get(api, "/v1/users/u1/recommendations?limit=abc") == (
        400,
        {"error": "limit must be a whole number from 1 to 1000, got 'abc'"},
    )
    status, body = get(api, "/v1/users/u1?vectors=please")
    assert status == 400 and body["error"] == (
        "vectors must be 1/true/yes or 0/false/no, got 'please'"
    )
    status, body = get(api, "/v1/users/u1?vector=1")
    assert status == 400 and "unknown parameter 'vector'" in str(body["error"])
    assert get(api, "/v1/users/u1?vectors=1")[0] == 200


def test_the_cli_client_passes_the_reason_on(api: ApiSettings) -> None:
    with pytest.raises(ApiUnavailable) as info:
        ApiClient(api).recommend("u1", [("limit", "abc")])
    assert str(info.value) == (
        f"the API at {api.url} answered 400: limit must be a whole number from 1 to 1000, got 'abc'"
    )
