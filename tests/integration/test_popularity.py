"""Live item popularity end to end: events on items -> a stream worker's item table -> the
popularity topic -> an embed worker -> the ``popularity`` payload of the items in embedded Qdrant.

Checks that the values are the decayed counts of the distinct positive events (duplicates,
dislikes and a restart of the stream worker change nothing), that an item not in ``items`` is not
created, and that a replay of the popularity topic gives the same payloads.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from kafka_testing import StreamWorkerProcess, free_port

from models.profile import InterestSpec
from models.settings import ModelSettings, QdrantSettings
from models.store import POPULARITY_FIELD, InterestStore
from streams.contracts.popularity import PopularityUpdate
from streams.embed.worker import EmbedWorker
from streams.settings import EmbedSettings, KafkaSettings, TopicSettings
from streams.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HALF_LIFE_S = 86_400.0
HOUR_MS = 3_600_000
WEIGHTS = {"view": 0.5, "click": 1.0, "like": 2.0, "purchase": 3.0, "dislike": -1.0}
DIM = 384  # the bundled model's


def expected(events: list[tuple[str, int]], as_of_ms: int) -> float:
    """Σ w · 2^(−(t − ts)/h) over the positive events, straight from the definition."""
    return sum(
        WEIGHTS[t] * 2.0 ** (-(as_of_ms - ts) / 1000 / HALF_LIFE_S)
        for t, ts in events
        if WEIGHTS[t] > 0
    )


async def produce(kafka: KafkaSettings, topic: str, records: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def latest(kafka: KafkaSettings, topic: str, partitions: int) -> dict[str, PopularityUpdate]:
    """The popularity topic read to its end: the latest value per item (what compaction keeps)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    out: dict[str, PopularityUpdate] = {}
    try:
        if topic not in await consumer.topics():
            return out  # the stream worker has not created it yet
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    assert r.key is not None
                    update = PopularityUpdate.from_json(r.value)
                    assert r.key.decode() == update.item_id
                    out[update.item_id] = update
    finally:
        await consumer.stop()
    return out


def wait_for_values(
    kafka: KafkaSettings,
    topics: TopicSettings,
    check: Callable[[dict[str, PopularityUpdate]], bool],
) -> dict[str, PopularityUpdate]:
    deadline = time.monotonic() + 60
    while True:
        got = asyncio.run(latest(kafka, topics.popularity, topics.partitions))
        if check(got):
            return got
        assert time.monotonic() < deadline, f"popularity never matched: {got}"
        time.sleep(0.5)


async def drain_embed(
    kafka: KafkaSettings, topics: TopicSettings, qdrant: QdrantSettings, group: str
) -> EmbedWorker:
    """Run an embed worker until its group has committed the popularity topic's end."""
    worker = EmbedWorker(kafka, topics, EmbedSettings(group_id=group), ModelSettings(), qdrant)
    task = asyncio.create_task(worker.serve())
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    probe = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=None)
    await probe.start()
    try:
        tps = [TopicPartition(topics.popularity, p) for p in range(topics.partitions)]
        ends = await probe.end_offsets(tps)
        deadline = time.monotonic() + 120
        while True:
            if task.done():
                task.result()
            offsets = await admin.list_consumer_group_offsets(group)
            if all(tp in offsets and offsets[tp].offset >= end for tp, end in ends.items() if end):
                break
            assert time.monotonic() < deadline, f"embed worker stuck: {worker.stats}"
            await asyncio.sleep(0.2)
    finally:
        worker.should_exit = True
        await asyncio.wait_for(task, 60)
        await probe.stop()
        await admin.close()
    return worker


def event(eid: str, user: str, item: str, type_: str, ts: int) -> bytes:
    # With a text, so that users have vectors even for items the store does not know.
    body = {"event_id": eid, "user_id": user, "type": type_, "ts": ts, "item_id": item,
            "text": f"about {item}"}  # fmt: skip
    return json.dumps(body).encode()


def wait_healthy(port: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, "the stream worker did not become healthy"
        time.sleep(0.1)


def test_events_on_items_become_decayed_popularity_in_the_items_payload(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> None:
    topics = TopicSettings(
        events=topics.events,
        dlq=topics.dlq,
        updates=topics.updates,
        popularity=f"{topics.events}.popularity",
        partitions=topics.partitions,
    )
    asyncio.run(ensure_topics(kafka, topics))
    qdrant = QdrantSettings(path=tmp_path / "qdrant")
    rng = np.random.default_rng(3)
    with InterestStore.from_settings(qdrant, DIM) as store:
        store.ensure_collections(DIM, InterestSpec().vector_names())
        store.upsert_items(
            [(i, rng.normal(size=DIM), {"text": i}) for i in ("hit", "niche", "hated", "quiet")]
        )
    app = f"test-pop-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "INTEREST_TOPICS_EVENTS": topics.events,
        "INTEREST_TOPICS_DLQ": topics.dlq,
        "INTEREST_TOPICS_UPDATES": topics.updates,
        "INTEREST_TOPICS_POPULARITY": topics.popularity,
        "INTEREST_TOPICS_PARTITIONS": str(topics.partitions),
        "INTEREST_STREAM_APP_ID": app,
        "INTEREST_STREAM_REPARTITION_TOPIC": f"{topics.events}.repartition",
        "INTEREST_STREAM_SESSION_TIMEOUT_S": "6",
        "INTEREST_STREAM_COMMIT_INTERVAL_S": "0.5",
        "INTEREST_STREAM_DATA_DIR": str(tmp_path / "stream"),
        "INTEREST_STREAM_METRICS_PORT": "0",
        "INTEREST_STREAM_POPULARITY_INTERVAL_S": "0.5",
        "INTEREST_STREAM_POPULARITY_HALF_LIFE_S": str(HALF_LIFE_S),
        "INTEREST_STREAM_POPULARITY_TOLERANCE": "0.000001",
    }
    now = int(time.time() * 1000)
    # Per item: (type, ts) of its events, over the last two days (so decay matters).
    truth: dict[str, list[tuple[str, int]]] = {"hit": [], "niche": [], "hated": [], "ghost": []}
    records: list[tuple[str, bytes]] = []
    types = ["view", "click", "like", "purchase"]
    for i in range(240):
        user = f"u{i % 30}"
        item = ["hit", "hit", "hit", "niche", "ghost"][i % 5] if i % 11 else "hated"
        type_ = "dislike" if item == "hated" else types[i % 4]
        ts = now - (i * 997_003) % (48 * HOUR_MS)
        truth[item].append((type_, ts))
        records.append((user, event(f"e{i}", user, item, type_, ts)))
    duplicates = records[:30]  # at-least-once producers: same event ids again

    workers: list[StreamWorkerProcess] = []
    try:
        workers.append(StreamWorkerProcess(env, tmp_path / "stream-1.log"))
        asyncio.run(produce(kafka, topics.events, records + duplicates))

        def matches(got: dict[str, PopularityUpdate]) -> bool:
            return set(got) == {"hit", "niche", "ghost"} and all(
                abs(u.popularity - expected(truth[item], u.as_of_ms)) < 1e-9 * u.popularity
                for item, u in got.items()
            )

        first = wait_for_values(kafka, topics, matches)
        assert workers[0].terminate() == 0
        # A restart recovers the item table from its changelog: more events on "niche" are
        # added to what was counted, nothing is counted twice. (Produced once the worker is up:
        # a record arriving while faust finishes its recovery can be skipped until the next
        # restart -- an open faust issue, independent of popularity.)
        port = free_port()
        workers.append(
            StreamWorkerProcess(
                {**env, "INTEREST_STREAM_METRICS_PORT": str(port)}, tmp_path / "s2.log"
            )
        )
        wait_healthy(port)
        more = [(f"v{i}", event(f"x{i}", f"v{i}", "niche", "purchase", now)) for i in range(3)]
        truth["niche"] += [("purchase", now)] * 3
        asyncio.run(produce(kafka, topics.events, more))
        wait_for_values(
            kafka,
            topics,
            lambda got: matches(got) and got["niche"].as_of_ms > first["niche"].as_of_ms,
        )
        assert workers[1].terminate() == 0
        # The worker may emit a decayed value again until it stops: compare with the last ones.
        final = asyncio.run(latest(kafka, topics.popularity, topics.partitions))
        assert matches(final)
    finally:
        for w in workers:
            w.close()

    group = f"embed-{uuid.uuid4().hex[:8]}"
    embed = asyncio.run(drain_embed(kafka, topics, qdrant, group))
    assert embed.stats.popularity_applied >= 2 and embed.stats.popularity_unknown >= 1
    with InterestStore.from_settings(qdrant, DIM) as store:
        points = {
            p.payload["item_id"]: p.payload
            for p in store.backend.scroll(store.items_collection, limit=100)[0]
            if p.payload
        }
    assert set(points) == {"hit", "niche", "hated", "quiet"}  # "ghost" was not created
    for item in ("hit", "niche"):
        # qdrant-edge 0.9 keeps a 17-digit payload float up to one ulp off (see
        # test_store_congruence.py::test_float_filter_on_a_17_digit_value): equal to ~1e-15.
        stored = points[item][POPULARITY_FIELD]
        assert stored == pytest.approx(final[item].popularity, rel=1e-14, abs=0), item
        assert points[item]["text"] == item  # the rest of the payload is untouched
    assert POPULARITY_FIELD not in points["hated"]  # dislikes only: never counted
    assert POPULARITY_FIELD not in points["quiet"]

    # A replay of the whole topic (a new group) lands on the same values.
    asyncio.run(drain_embed(kafka, topics, qdrant, f"embed-{uuid.uuid4().hex[:8]}"))
    with InterestStore.from_settings(qdrant, DIM) as store:
        again = {
            p.payload["item_id"]: p.payload
            for p in store.backend.scroll(store.items_collection, limit=100)[0]
            if p.payload
        }
    assert again == points
