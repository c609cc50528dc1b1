"""Stream workers on the real broker: bursts, kill -9 and restart, two workers and a rebalance,
the metrics server.

Each test runs ``python -m streams.stream.app`` as child processes (as ``interest-stream stream``
does) on fresh topics and checks the jobs on the updates topic against the input:

* the union of the jobs' events is exactly the valid, de-duplicated input (or, after a kill -9,
  a superset: a job may be re-emitted, never lost);
* each user's events keep the order they were produced in;
* every (user, n) means one event in every job, and every event keeps one n.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kafka_testing import StreamWorkerProcess, free_port, read_topic_sync
from prometheus_client.parser import text_string_to_metric_families

from streams.contracts.dlq import DeadLetter
from streams.contracts.jobs import UpdateJob
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

LOUD_LEVELS = ("WARNING", "ERROR", "CRITICAL")


@pytest.fixture
def workers(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> Iterator[list[StreamWorkerProcess]]:
    """Worker processes a test starts (killed at the end if still running); topics exist.

    Their warnings and errors are printed at the end: pytest shows them with a failed test."""
    asyncio.run(ensure_topics(kafka, topics))
    started: list[StreamWorkerProcess] = []
    yield started
    for w in started:
        w.close()
        lines = Path(w.log.name).read_text(errors="replace").splitlines()
        loud = [line for line in lines if any(f"] [{lv}] " in line for lv in LOUD_LEVELS)]
        print(f"== {w.log.name}: {len(lines)} lines, warnings and errors:", *loud[-30:], sep="\n")


def worker_env(kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path) -> dict[str, str]:
    app = f"test-stream-{uuid.uuid4().hex[:8]}"
    return {
        **os.environ,
        "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "INTEREST_TOPICS_EVENTS": topics.events,
        "INTEREST_TOPICS_DLQ": topics.dlq,
        "INTEREST_TOPICS_UPDATES": topics.updates,
        "INTEREST_TOPICS_POPULARITY": f"{topics.events}.popularity",
        "INTEREST_TOPICS_PARTITIONS": str(topics.partitions),
        "INTEREST_STREAM_APP_ID": app,
        "INTEREST_STREAM_REPARTITION_TOPIC": f"{topics.events}.repartition",
        "INTEREST_STREAM_SESSION_TIMEOUT_S": "6",
        "INTEREST_STREAM_COMMIT_INTERVAL_S": "0.5",
        "INTEREST_STREAM_DATA_DIR": str(tmp_path / "stream"),
        "INTEREST_STREAM_LOGLEVEL": "info",
        "INTEREST_STREAM_METRICS_PORT": "0",  # several workers at once
    }


def event(eid: str, user: str, **extra: object) -> bytes:
    body = {"event_id": eid, "user_id": user, "type": "click", "ts": int(time.time() * 1000)}
    return json.dumps({**body, "text": f"text of {eid}", **extra}).encode()


async def produce(
    kafka: KafkaSettings, topic: str, records: list[tuple[bytes | None, bytes]], rate: float = 0
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for i, (key, value) in enumerate(records):
            await producer.send(topic, value, key=key)
            if rate and i % 50 == 49:
                await asyncio.sleep(50 / rate)
        await producer.flush()
    finally:
        await producer.stop()


class JobReader:
    """Collects jobs from the updates topic in a background thread."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.jobs: list[UpdateJob] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.kafka.bootstrap,
            group_id=f"job-reader-{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    self.jobs.extend(UpdateJob.from_json(r.value) for r in records)
        finally:
            await consumer.stop()

    def events(self) -> set[tuple[str, str]]:
        return {(j.user_id, e.event_id) for j in list(self.jobs) for e in j.events}

    def wait_for(self, expected: set[tuple[str, str]], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not expected <= self.events():
            time.sleep(0.2)
        time.sleep(1.5)  # anything more (a duplicate job) would show up now
        self._stop.set()
        self._thread.join(timeout=5)


def check_jobs(
    jobs: list[UpdateJob], sent: list[tuple[str, str]], *, exact: bool
) -> dict[str, list[str]]:
    """The invariants of the module docstring; returns each user's events in n order."""
    by_n: dict[tuple[str, int], str] = {}
    by_id: dict[tuple[str, str], int] = {}
    for job in jobs:
        assert job.seq == job.events[-1].n
        for e in job.events:
            assert by_n.setdefault((job.user_id, e.n), e.event_id) == e.event_id, "renumbered"
            assert by_id.setdefault((job.user_id, e.event_id), e.n) == e.n, "renumbered"
    expected = set(sent)
    assert set(by_id) >= expected, f"lost {sorted(expected - set(by_id))[:5]}"
    assert set(by_id) <= expected
    if exact:
        total = sum(len(j.events) for j in jobs)
        assert total == len(expected), "an event was emitted twice"
    order: dict[str, list[str]] = {}
    for (user, _n), eid in sorted(by_n.items()):
        order.setdefault(user, []).append(eid)
    return order


def in_order(order: dict[str, list[str]], sent: list[tuple[str, str]]) -> None:
    for user, got in order.items():
        assert got == list(dict.fromkeys(e for u, e in sent if u == user)), user


def test_burst_for_many_users(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, workers: list[StreamWorkerProcess]
) -> None:
    """Keyed events, duplicates, broken records and unkeyed records for 200 users."""
    users = [f"user-{i}" for i in range(200)]
    records: list[tuple[bytes | None, bytes]] = []
    sent: list[tuple[str, str]] = []
    for i in range(3_000):
        user = users[(i * 7) % len(users)]
        records.append((user.encode(), event(f"e{i}", user)))
        sent.append((user, f"e{i}"))
        if i % 100 == 0:
            records.append((user.encode(), event(f"e{i}", user)))  # producer retry
    unkeyed = [(None, event(f"u{i}", users[i])) for i in range(50)]
    broken = [(b"user-1", b"{oops"), (b"user-2", event("b1", "user-2", type="teleport"))]
    reader = JobReader(kafka, topics.updates)
    workers.append(StreamWorkerProcess(worker_env(kafka, topics, tmp_path), tmp_path / "w1.log"))
    asyncio.run(produce(kafka, topics.events, records + unkeyed + broken))
    expected = set(sent) | {(users[i], f"u{i}") for i in range(50)}
    reader.wait_for(expected, timeout_s=40)
    order = check_jobs(reader.jobs, [*sent, *((users[i], f"u{i}") for i in range(50))], exact=True)
    # Keyed events keep their order; re-keyed ones come in after their detour, in order too.
    in_order({u: [e for e in o if e.startswith("e")] for u, o in order.items()}, sent)
    in_order(
        {u: [e for e in o if e.startswith("u")] for u, o in order.items()},
        [(users[i], f"u{i}") for i in range(50)],
    )
    letters = [
        DeadLetter.from_record(r.key, r.value, r.headers)
        for r in read_topic_sync(kafka, topics.dlq, expect=2)
    ]
    assert sorted(d.reason for d in letters) == ["not_json", "unknown_type"]
    assert {d.value for d in letters} == {v for _, v in broken}
    # A graceful stop commits and writes everything: a new worker has nothing to re-emit.
    assert workers[0].terminate() == 0
    jobs_before = len(read_topic_sync(kafka, topics.updates, expect=len(reader.jobs)))
    workers.append(StreamWorkerProcess(workers[0].env, tmp_path / "w2.log"))
    wait_until(lambda: bool(owned(tmp_path / "w2.log")))
    time.sleep(2)
    assert len(read_topic_sync(kafka, topics.updates, expect=jobs_before + 1, timeout_s=2)) == (
        jobs_before
    )
    assert workers[1].terminate() == 0


def test_kill_9_mid_run_and_restart_loses_nothing(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, workers: list[StreamWorkerProcess]
) -> None:
    """Killed twice while events keep coming: each restart recovers the state from the changelog
    and resumes from the committed offsets (where faust's recovery used to drop records:
    streams.stream.faust_ordering)."""
    users = [f"k-{i}" for i in range(100)]
    sent = [(users[i % len(users)], f"e{i}") for i in range(8_000)]
    records: list[tuple[bytes | None, bytes]] = [(u.encode(), event(e, u)) for u, e in sent]
    env = worker_env(kafka, topics, tmp_path)
    reader = JobReader(kafka, topics.updates)
    workers.append(StreamWorkerProcess(env, tmp_path / "w1.log"))
    producing = threading.Thread(
        target=lambda: asyncio.run(produce(kafka, topics.events, records, rate=1_000))
    )
    producing.start()
    kill_at = 1_500
    for kill in range(2):
        deadline = time.monotonic() + 40
        while len(reader.events()) < kill_at and time.monotonic() < deadline:
            time.sleep(0.02)
        emitted = len(reader.events())
        assert emitted >= kill_at, "the worker stopped emitting"
        workers[-1].kill()  # mid-run: jobs out, state and offsets partly written
        if kill == 0:  # (the second worker may catch up in one burst before its kill)
            assert emitted < len(sent), "the worker had finished: not a kill mid-run"
        workers.append(StreamWorkerProcess(env, tmp_path / f"w{len(workers) + 1}.log"))
        kill_at = emitted + 300  # the next worker dies soon after it starts emitting
    producing.join()
    reader.wait_for(set(sent), timeout_s=45)
    in_order(check_jobs(reader.jobs, sent, exact=False), sent)
    assert workers[-1].terminate() == 0


def test_two_workers_split_partitions_and_agree_after_rebalance(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, workers: list[StreamWorkerProcess]
) -> None:
    users = [f"r-{i}" for i in range(60)]
    sent = [(users[i % len(users)], f"e{i}") for i in range(4_000)]
    records: list[tuple[bytes | None, bytes]] = [(u.encode(), event(e, u)) for u, e in sent]
    env = worker_env(kafka, topics, tmp_path)
    reader = JobReader(kafka, topics.updates)
    workers.append(StreamWorkerProcess(env, tmp_path / "w1.log"))
    producing = threading.Thread(
        target=lambda: asyncio.run(produce(kafka, topics.events, records, rate=400))
    )
    producing.start()
    workers.append(StreamWorkerProcess(env, tmp_path / "w2.log"))
    # Both run: the partitions are split between them (a rebalance mid-stream) ...
    wait_until(lambda: any(0 < len(o) < topics.partitions for o in owned(tmp_path / "w2.log")))
    time.sleep(1)
    # ... then one stops (another rebalance) and the other takes everything over.
    assert workers[0].terminate() == 0
    wait_until(lambda: owned(tmp_path / "w2.log")[-1] == set(range(topics.partitions)))
    producing.join()
    reader.wait_for(set(sent), timeout_s=45)
    in_order(check_jobs(reader.jobs, sent, exact=False), sent)
    assert workers[1].terminate() == 0
    # Every partition had a known start (streams.stream.group_offsets), so the gapless check ran on
    # each one, and faust's fetch loop never died.
    for log in ("w1.log", "w2.log"):
        text = (tmp_path / log).read_text()
        assert "has no committed offset" not in text and "Drain messages raised" not in text


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_metrics_and_health_while_events_flow(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path, workers: list[StreamWorkerProcess]
) -> None:
    """``/healthz`` says consuming; ``/metrics`` has the interest_stream_* counters (DLQ by
    reason) and the consumer lag of the worker's own group, read when scraped."""
    port = free_port()
    env = {**worker_env(kafka, topics, tmp_path), "INTEREST_STREAM_METRICS_PORT": str(port)}
    app = env["INTEREST_STREAM_APP_ID"]
    base = f"http://127.0.0.1:{port}"
    workers.append(StreamWorkerProcess(env, tmp_path / "w1.log"))
    wait_until(lambda: http_get(f"{base}/healthz")[0] == 200, timeout_s=60)
    health = json.loads(http_get(f"{base}/healthz")[1])
    assert health["consuming"] and health["worker"] == "stream" and health["group"] == app
    assert len(health["assigned"]) == topics.partitions

    users = [f"m-{i}" for i in range(20)]
    sent = [(users[i % 20], f"e{i}") for i in range(300)]
    records: list[tuple[bytes | None, bytes]] = [
        (u.encode(), event(e, u, item_id=f"item-{i % 7}")) for i, (u, e) in enumerate(sent)
    ]
    broken = [(b"m-1", b"{oops"), (b"m-2", event("b1", "m-2", type="teleport"))]
    reader = JobReader(kafka, topics.updates)
    asyncio.run(produce(kafka, topics.events, records + broken))
    reader.wait_for(set(sent), timeout_s=40)

    def scraped() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, body = http_get(f"{base}/metrics")
        assert status == 200
        return samples(body)

    def lag_of(got: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> list[float]:
        return [
            v
            for (name, labels), v in got.items()
            if name == "interest_consumer_lag"
            and dict(labels)["group"] == app
            and dict(labels)["topic"] == topics.events
        ]

    # Lag needs a committed offset (every 0.5 s here); the collector re-reads at most every 5 s.
    wait_until(lambda: len(lag_of(scraped())) == topics.partitions, timeout_s=30)
    wait_until(lambda: sum(lag_of(scraped())) == 0, timeout_s=30)
    got = scraped()
    assert got[("interest_stream_records_total", ())] == len(records) + len(broken)
    assert got[("interest_stream_events_total", ())] == len(sent)
    assert got[("interest_stream_jobs_total", ())] == len(reader.jobs)
    assert got[("interest_stream_job_events_total", ())] == len(sent)
    assert got[("interest_stream_item_interactions_total", ())] == len(sent)
    assert got[("interest_stream_dlq_total", (("reason", "not_json"),))] == 1
    assert got[("interest_stream_dlq_total", (("reason", "unknown_type"),))] == 1
    # The same dead letters, counted from the DLQ topic (where publish's would be too).
    dead = "interest_dead_letters_total"
    wait_until(lambda: scraped().get((dead, (("reason", "not_json"), ("stage", "stream")))) == 1)
    assert scraped()[(dead, (("reason", "unknown_type"), ("stage", "stream")))] == 1
    assert got[("interest_worker_consuming", ())] == 1
    assert got[("interest_consumer_lag_read_ok", ())] == 1
    # One worker from a fresh group: nothing stale to re-read, no partition stalled.
    for kind in ("refetch", "gap", "stall"):
        assert got[("interest_stream_consumer_repairs_total", (("kind", kind),))] == 0
    assert workers[0].terminate() == 0
    assert http_get(f"{base}/healthz")[0] == 0  # stopped with the worker


def wait_until(condition: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def owned(log: Path) -> list[set[int]]:
    """Each assignment a worker logged ("stream worker owns partitions [...]")."""
    out: list[set[int]] = []
    if not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        if "stream worker owns partitions" in line:
            listed = line.split("[")[-1].split("]")[0]
            out.append({int(p) for p in listed.split(",") if p.strip()})
    return out
