"""Session-wide fixtures. Integration tests get the real local Kafka broker, started once.

``scripts/test.sh`` (the README's test command) starts the broker before pytest; run directly,
pytest starts one itself on the test port with a throw-away data dir and stops it at the end.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests never touch a user's real data dir or a broker on the default port.
os.environ.setdefault("INTEREST_BROKER_PORT", "29092")
os.environ.setdefault("INTEREST_DATA_DIR", tempfile.mkdtemp(prefix="interest-test-"))
os.environ.setdefault("INTEREST_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ['INTEREST_BROKER_PORT']}")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from models.config import CoreSettings
from models.settings import QdrantSettings
from models.store import InterestStore
from streams.broker import LocalBroker
from streams.settings import BrokerSettings, KafkaSettings, TopicSettings


def port_open(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaSettings]:
    """Settings of a running real broker (the local one, started here if need be)."""
    broker = LocalBroker(BrokerSettings(), CoreSettings())
    started_here = False
    if not broker.status().running and not port_open(KafkaSettings().bootstrap):
        broker.start()
        started_here = True
    yield KafkaSettings()
    if started_here:
        broker.stop()


@pytest.fixture
def topics() -> TopicSettings:
    """Fresh topic names per test, so tests never see each other's records (every topic field
    of ``TopicSettings``, the popularity topic included: embed workers consume it too)."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    return TopicSettings(
        events=f"{prefix}.events",
        dlq=f"{prefix}.events.dlq",
        updates=f"{prefix}.updates",
        popularity=f"{prefix}.items.popularity",
        partitions=3,
    )


EdgeStoreFactory = Callable[..., InterestStore]


@pytest.fixture
def edge_store(tmp_path: Path) -> Iterator[EdgeStoreFactory]:
    """Opens stores on the default engine (embedded Qdrant) in folders under ``tmp_path``.

    ``edge_store(dimension, folder="qdrant", **qdrant_settings)``: embedded whatever the
    environment says (``url=None``); every store opened is closed after the test (closing twice
    is harmless), so no folder lock outlives it.
    """
    opened: list[InterestStore] = []

    def open_store(dimension: int, folder: str = "qdrant", **settings: Any) -> InterestStore:
        store = InterestStore.from_settings(
            QdrantSettings(path=tmp_path / folder, url=None, **settings), dimension
        )
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()
