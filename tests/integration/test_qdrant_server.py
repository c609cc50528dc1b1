"""The store against a real Qdrant server, with its API key and TLS: runs only when one is given
(``INTEREST_TEST_QDRANT_URL``, with ``INTEREST_TEST_QDRANT_API_KEY`` for a server that requires a
key and ``INTEREST_TEST_QDRANT_CA_FILE`` for an ``https`` one signed by a private CA). No Qdrant
server can be installed on the project's own machines; the TLS errors are also tested against a
local TLS endpoint (tests/unit/models/store/test_server_security.py)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pytest

from models.settings import QdrantSettings
from models.store import InterestStore
from models.store.base import EngineError

URL = os.environ.get("INTEREST_TEST_QDRANT_URL")
KEY = os.environ.get("INTEREST_TEST_QDRANT_API_KEY")
CA = os.environ.get("INTEREST_TEST_QDRANT_CA_FILE")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not URL, reason="INTEREST_TEST_QDRANT_URL names no Qdrant server"),
]


def settings(**overrides: object) -> QdrantSettings:
    run = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "url": URL,
        "api_key": KEY,
        "ca_file": Path(CA) if CA else None,
        "users_collection": f"test-users-{run}",
        "items_collection": f"test-items-{run}",
    }
    return QdrantSettings(**{**values, **overrides})  # type: ignore[arg-type]


def test_a_user_round_trips_and_is_deleted_with_the_key(tmp_path: Path) -> None:
    s = settings()
    with InterestStore.from_settings(s, 4) as store:
        store.ensure_collections(4, ["short_term"])
        try:
            vector = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
            store.upsert_users([("u1", {"short_term": vector}, {"seq": 3})])
            got = store.get_users(["u1"])["u1"]
            assert got.payload["seq"] == 3
            assert np.allclose(got.vectors["short_term"], vector)
            store.delete_users(["u1"])
            assert store.get_users(["u1"]) == {}
        finally:
            for name in (s.users_collection, s.items_collection):
                if store.backend.collection_exists(name):
                    store.backend.client.delete_collection(name)  # type: ignore[attr-defined]


@pytest.mark.skipif(not KEY, reason="the server takes no API key")
def test_a_wrong_key_is_refused_in_one_line_naming_the_setting(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("not-the-key\n")
    with (
        InterestStore.from_settings(settings(api_key=None, api_key_file=key_file), 4) as store,
        pytest.raises(EngineError) as info,
    ):
        store.has_users()
    message = str(info.value)
    assert "\n" not in message and "not-the-key" not in message
    assert "check INTEREST_QDRANT_API_KEY" in message
