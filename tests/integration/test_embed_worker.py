"""The embed worker against the real broker, embedded Qdrant and the bundled model."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from kafka_testing import read_topic_sync

from models.catalog import CatalogItem, load_items
from models.encoder import Encoder
from models.interests import Observation
from models.profile import InterestSpec, batch_compute
from models.settings import ModelSettings, QdrantSettings
from models.store import InterestStore
from streams.contracts.dlq import DeadLetter
from streams.contracts.jobs import JobEvent, UpdateJob
from streams.embed.worker import EmbedWorker
from streams.settings import EmbedSettings, KafkaSettings, TopicSettings
from streams.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T0 = 1_750_000_000_000
TEXTS = [
    "training deep neural networks with backpropagation",
    "generative adversarial networks for image synthesis",
    "a classic chocolate cake recipe",
    "sourdough bread baking at home",
    "transformer language models and attention",
]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_settings(ModelSettings()).load()


def make_events(user: int, count: int) -> list[JobEvent]:
    types = ["click", "like", "view", "search", "dislike", "purchase", "read", "skip"]
    weights = {"click": 1.0, "like": 2.0, "view": 0.5, "search": 1.0, "dislike": -1.0,
               "purchase": 3.0, "read": 1.0, "skip": -0.5}  # fmt: skip
    out = []
    for n in range(1, count + 1):
        t = types[(n + user) % len(types)]
        item = f"item-{n % 3}" if n % 4 == 0 else None
        text = None if item and n % 8 == 0 else TEXTS[(n * (user + 1)) % len(TEXTS)]
        out.append(
            JobEvent(n, f"u{user}-e{n}", t, weights[t], T0 + n * 60_000 + user, item, text,
                     ("ml",) if "network" in (text or "") else ())
        )  # fmt: skip
    return out


def jobs_for(user: str, events: list[JobEvent], cuts: list[int]) -> list[UpdateJob]:
    bounds = [0, *cuts, len(events)]
    return [
        UpdateJob(user, tuple(events[a:b]), first_seen_ms=int(time.time() * 1000),
                  emitted_ms=int(time.time() * 1000))
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]  # fmt: skip


async def send(kafka: KafkaSettings, topic: str, values: list[tuple[str, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in values:
            await producer.send(topic, value, key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def run_worker_until(
    worker: EmbedWorker, done: Callable[[EmbedWorker], bool], timeout_s: float = 90
) -> None:
    task = asyncio.create_task(worker.serve())
    deadline = time.monotonic() + timeout_s
    try:
        while not done(worker) and time.monotonic() < deadline:
            if task.done():
                task.result()
            await asyncio.sleep(0.1)
    finally:
        worker.should_exit = True
        await asyncio.wait_for(task, 60)
    assert done(worker), f"worker did not finish in {timeout_s} s: {worker.stats}"


async def committed(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of ``topic`` (the group consumes several)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == topic and meta.offset >= 0
        }
    finally:
        await admin.close()


def worker_for(
    kafka: KafkaSettings, topics: TopicSettings, qdrant: QdrantSettings, group: str
) -> EmbedWorker:
    settings = EmbedSettings(group_id=group, retry_initial_s=0.2, retry_max_s=0.5)
    return EmbedWorker(kafka, topics, settings, ModelSettings(), qdrant)


def expected_vectors(
    events: list[JobEvent], encoder: Encoder, items: dict[str, np.ndarray], spec: InterestSpec
) -> dict[str, np.ndarray]:
    observations = []
    for e in events:
        if e.item_id in items:
            vector = items[e.item_id]
        elif e.text:
            vector = encoder.encode([e.text])[0]
        else:
            continue
        observations.append(Observation(e.ts_ms, e.weight, e.type, vector, e.tags))
    return batch_compute(observations, spec).vectors()


def test_jobs_become_vectors_equal_to_batch_recomputation_and_replays_change_nothing(
    tmp_path: Path, kafka: KafkaSettings, topics: TopicSettings, encoder: Encoder
) -> None:
    spec = InterestSpec()
    qdrant = QdrantSettings(path=tmp_path / "qdrant")
    with InterestStore.from_settings(qdrant, encoder.dimension) as store:
        store.ensure_collections(encoder.dimension, spec.vector_names())
        catalog = [CatalogItem(f"item-{i}", TEXTS[i], {"tags": ["catalog"]}) for i in range(2)]
        load_items(catalog, encoder, store)  # item-2 is unknown: text or nothing
        items = store.get_item_vectors([f"item-{i}" for i in range(3)])
    assert set(items) == {"item-0", "item-1"}

    users = {f"user-{u}": make_events(u, 12 + 3 * u) for u in range(4)}
    jobs = []
    for index, (user, events) in enumerate(users.items()):
        cuts = [[], [5], [2, 7, 9], [1, 2, 3, 10, 14]][index]
        jobs.extend(jobs_for(user, events, cuts))
    group = f"embed-{uuid.uuid4().hex[:8]}"

    async def first_pass() -> None:
        await ensure_topics(kafka, topics)
        await send(kafka, topics.updates, [(j.user_id, j.to_json()) for j in jobs])
        await send(kafka, topics.updates, [("user-0", b"{not a job")])
        worker = worker_for(kafka, topics, qdrant, group)
        await run_worker_until(
            worker, lambda w: w.stats.jobs + w.stats.invalid_jobs >= len(jobs) + 1
        )
        assert worker.stats.invalid_jobs == 1
        assert worker.stats.skipped["no_vector"] > 0  # item-2 events without text

    asyncio.run(first_pass())
    assert sum(asyncio.run(committed(kafka, group, topics.updates)).values()) == len(jobs) + 1

    with InterestStore.from_settings(qdrant, encoder.dimension) as store:
        stored = store.get_users(users)
    for user, events in users.items():
        want = expected_vectors(events, encoder, items, spec)
        got = stored[user].vectors
        assert set(got) == set(want), user
        for name, vector in want.items():
            np.testing.assert_allclose(got[name], vector, atol=1e-5, err_msg=f"{user}/{name}")
        assert stored[user].payload["seq"] == events[-1].n
        assert stored[user].payload["profile"], user

    # Replays: every job again, plus a re-cut of user-1's events (as after a stream-worker crash).
    replay = jobs + jobs_for("user-1", users["user-1"], [3, 11])

    async def second_pass() -> EmbedWorker:
        await send(kafka, topics.updates, [(j.user_id, j.to_json()) for j in replay])
        worker = worker_for(kafka, topics, qdrant, group)
        await run_worker_until(worker, lambda w: w.stats.jobs >= len(replay))
        return worker

    worker = asyncio.run(second_pass())
    assert worker.stats.events_applied == 0
    with InterestStore.from_settings(qdrant, encoder.dimension) as store:
        again = store.get_users(users)
    for user in users:
        assert again[user].payload == stored[user].payload
        for name, vector in stored[user].vectors.items():
            np.testing.assert_array_equal(again[user].vectors[name], vector)

    [letter] = read_topic_sync(kafka, topics.dlq, expect=1)
    dead = DeadLetter.from_record(letter.key, letter.value, letter.headers)
    assert dead.reason == "invalid_job" and dead.stage == "embed"
    assert dead.source.startswith(f"{topics.updates}/")


def test_unreachable_qdrant_retries_without_committing_or_losing_jobs(
    tmp_path: Path, kafka: KafkaSettings, topics: TopicSettings, encoder: Encoder
) -> None:
    events = make_events(7, 6)
    jobs = jobs_for("user-7", events, [3])
    group = f"embed-{uuid.uuid4().hex[:8]}"
    down = QdrantSettings(url="http://127.0.0.1:9", timeout=1)

    async def scenario() -> None:
        await ensure_topics(kafka, topics)
        await send(kafka, topics.updates, [(j.user_id, j.to_json()) for j in jobs])
        worker = worker_for(kafka, topics, down, group)
        await run_worker_until(worker, lambda w: w.stats.store_retries >= 3)
        assert worker.stats.jobs == 0 and worker.stats.commits == 0
        assert await committed(kafka, group, topics.updates) == {}

        healthy = QdrantSettings(path=tmp_path / "qdrant")
        worker = worker_for(kafka, topics, healthy, group)
        await run_worker_until(worker, lambda w: w.stats.jobs >= len(jobs))

    asyncio.run(scenario())
    with InterestStore.from_settings(QdrantSettings(path=tmp_path / "qdrant"), 384) as store:
        [user] = store.get_users(["user-7"]).values()
    assert user.payload["seq"] == events[-1].n


def test_a_user_with_nothing_embeddable_is_recorded_and_does_not_block_the_partition(
    tmp_path: Path, kafka: KafkaSettings, topics: TopicSettings
) -> None:
    # "ghost" only views items that are not loaded, without text: nothing to embed. Before the
    # fix the batch failed in the store and was retried forever, committing nothing.
    ghost = [JobEvent(n, f"g{n}", "view", 0.5, T0 + n, f"unloaded-{n % 2}") for n in range(1, 4)]
    normal = make_events(1, 8)  # event 8: an unloaded item without text
    jobs = [*jobs_for("ghost", ghost, [1]), *jobs_for("normal", normal, [3])]
    jobs += jobs_for("ghost", ghost, [2])  # a replay in the same run counts nothing twice
    group = f"embed-{uuid.uuid4().hex[:8]}"
    qdrant = QdrantSettings(path=tmp_path / "qdrant")

    async def scenario() -> EmbedWorker:
        await ensure_topics(kafka, topics)
        await send(kafka, topics.updates, [(j.user_id, j.to_json()) for j in jobs])
        worker = worker_for(kafka, topics, qdrant, group)
        await run_worker_until(worker, lambda w: w.stats.jobs >= len(jobs), timeout_s=60)
        return worker

    worker = asyncio.run(scenario())
    assert worker.stats.store_retries == 0
    assert sum(asyncio.run(committed(kafka, group, topics.updates)).values()) == len(jobs)
    no_vector = sum(1 for e in normal if e.item_id and not e.text) + len(ghost)
    assert worker.stats.skipped["no_vector"] == no_vector
    metric = f'interest_embed_events_skipped_total{{reason="no_vector"}} {float(no_vector)}'
    assert metric in worker.metrics.render().decode()

    with InterestStore.from_settings(qdrant) as store:
        stored = store.get_users(["ghost", "normal"])
    assert stored["normal"].payload["seq"] == normal[-1].n and stored["normal"].vectors
    assert stored["ghost"].payload["seq"] == ghost[-1].n
    assert stored["ghost"].vectors == {} and stored["ghost"].payload["events_folded"] == 0
