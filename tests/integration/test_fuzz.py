"""Hostile input on a real stream worker process: about 2k records, half of them bad (random bytes,
invalid UTF-8, deep nesting, huge numbers, NaN/Infinity, lone surrogates, 1 MB strings, wrong
types, keys that disagree with user_id, duplicate JSON keys, control characters:
tests/fuzz_messages.py), interleaved with good events.

Every bad record must land on the DLQ topic once, untouched (up to 64 KiB), with a stable reason
and its source; every good event must be in exactly one job; the worker must not restart (same
process, no agent crash in its log) and its memory must stay flat from the second half of the run
to the end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from fuzz_messages import Message, bad_megabyte, carried, mixed
from integration.test_stream_worker import JobReader, check_jobs, worker_env
from kafka_testing import StreamWorkerProcess, read_topic_sync

from streams.contracts.dlq import DeadLetter
from streams.contracts.events import REASONS
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration

#: Log lines that mean the worker or one of its agents died and was restarted.
CRASH_MARKS = ("Traceback", "[CRITICAL]", "Restarting dead", "crashed", "stopping the worker")


async def produce(kafka: KafkaSettings, topic: str, msgs: list[Message]) -> list[str]:
    """Send ``msgs`` in order; the ``topic/partition/offset`` each one landed at."""
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap, acks="all", max_request_size=1_100_000
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, m.value, key=m.key) for m in msgs]
        sent = [await f for f in futures]
    finally:
        await producer.stop()
    return [f"{topic}/{r.partition}/{r.offset}" for r in sent]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def wait_for(reader: JobReader, kafka: KafkaSettings, dlq: str, good: int, bad: int) -> None:
    """Until ``good`` job events and ``bad`` dead letters are out (or 40 s)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if len(reader.events()) >= good and len(read_topic_sync(kafka, dlq, expect=bad)) >= bad:
            return
        time.sleep(0.5)


def test_hostile_records_go_to_the_dlq_and_good_events_to_jobs_without_a_restart(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(kafka, topics))
    msgs = mixed(2_000, seed=18)
    halves = (msgs[:1_000], msgs[1_000:])
    reader = JobReader(kafka, topics.updates)
    worker = StreamWorkerProcess(worker_env(kafka, topics, tmp_path), tmp_path / "w.log")
    log = Path(worker.log.name)
    try:
        sources: list[str] = []
        rss: list[int] = []
        for n, half in enumerate(halves):
            sources += asyncio.run(produce(kafka, topics.events, half))
            done = msgs[: len(sources)]
            good = sum(m.good is not None for m in done)
            wait_for(reader, kafka, topics.dlq, good, len(done) - good)
            assert worker.proc.poll() is None, f"the worker exited in half {n + 1}"
            rss.append(rss_kib(worker.proc.pid))
        reader.wait_for({m.good for m in msgs if m.good is not None}, timeout_s=5)
        bad = {src: m for src, m in zip(sources, msgs, strict=True) if m.good is None}
        letters = [
            DeadLetter.from_record(r.key, r.value, r.headers)
            for r in read_topic_sync(kafka, topics.dlq, expect=len(bad))
        ]
        assert Counter(d.source for d in letters) == Counter(list(bad)), (
            "a bad record lost or doubled"
        )
        for d in letters:
            m = bad[d.source]
            assert d.reason in REASONS and d.stage == "stream" and d.detail, m.case
            assert m.reason is None or d.reason == m.reason, (m.case, d.detail)
            assert (d.key, d.value) == carried(m), m.case
        good = [m.good for m in msgs if m.good is not None]
        check_jobs(reader.jobs, good, exact=True)  # each good event in exactly one job
        assert worker.proc.poll() is None
        text = log.read_text(errors="replace")
        assert not [mark for mark in CRASH_MARKS if mark in text], text[-3000:]
        # Flat: the second half (as many records, the same mix) adds little.
        assert rss[1] - rss[0] < max(30 * 1024, rss[0] // 10), f"RSS KiB {rss}"
        print(f"{len(msgs)} records, {len(bad)} bad, RSS KiB after each half: {rss}")
        assert worker.terminate() == 0
    finally:
        worker.close()


def test_a_record_over_the_producers_limit_is_dead_lettered(
    kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path
) -> None:
    asyncio.run(ensure_topics(kafka, topics))
    poison = bad_megabyte(random.Random(0), 0, size=1_040_000)
    worker = StreamWorkerProcess(worker_env(kafka, topics, tmp_path), tmp_path / "w.log")
    try:
        (source,) = asyncio.run(produce(kafka, topics.events, [poison]))
        deadline = time.monotonic() + 30
        letters: list[DeadLetter] = []
        while not letters and worker.proc.poll() is None and time.monotonic() < deadline:
            letters = [
                DeadLetter.from_record(r.key, r.value, r.headers)
                for r in read_topic_sync(kafka, topics.dlq, expect=1, timeout_s=1)
            ]
        assert worker.proc.poll() is None, "the worker stopped on the record"
        assert [(d.source, d.reason) for d in letters] == [(source, "oversize")]
    finally:
        worker.close()
