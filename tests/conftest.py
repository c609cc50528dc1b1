"""Session-wide fixtures. Integration tests get the real local Kafka broker, started once.

``scripts/test.sh`` (the README's test command) starts the broker before pytest; run directly,
pytest starts one itself on the test port with a throw-away data dir and stops it at the end.
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator

import pytest

# Tests never touch a user's real data dir or a broker on the default port.
os.environ.setdefault("INTEREST_BROKER_PORT", "29092")
os.environ.setdefault("INTEREST_DATA_DIR", tempfile.mkdtemp(prefix="interest-test-"))
os.environ.setdefault("INTEREST_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ['INTEREST_BROKER_PORT']}")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from models.config import CoreSettings
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
