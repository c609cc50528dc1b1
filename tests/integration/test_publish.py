"""Events enter through `interest-stream publish` / `streams.publish`: valid ones on the events
topic keyed by user, broken ones on the DLQ with their reason, original bytes and source line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from kafka_testing import read_topic_sync

from streams.contracts.dlq import DeadLetter
from streams.contracts.events import InvalidEvent
from streams.publish import EventPublisher
from streams.settings import KafkaSettings, TopicSettings

pytestmark = pytest.mark.integration

NOW = int(time.time() * 1000)


def topic_env(topics: TopicSettings) -> dict[str, str]:
    return {
        **os.environ,
        "INTEREST_TOPICS_EVENTS": topics.events,
        "INTEREST_TOPICS_DLQ": topics.dlq,
        "INTEREST_TOPICS_UPDATES": topics.updates,
        "INTEREST_TOPICS_PARTITIONS": str(topics.partitions),
    }


def good(i: int, user: str) -> str:
    return json.dumps(
        {"event_id": f"e{i}", "user_id": user, "type": "click", "ts": NOW - 10_000 + i,
         "text": f"article {i}"}
    )  # fmt: skip


def broken(**fields: object) -> str:
    base: dict[str, object] = {"event_id": "b", "user_id": "u", "type": "click", "ts": NOW}
    return json.dumps({**base, "text": "x", **fields})


BROKEN = {
    "not_json": "{this is not json",
    "not_object": "[1, 2, 3]",
    "missing_field": json.dumps({"event_id": "b1", "type": "click", "ts": NOW, "text": "x"}),
    "wrong_type": broken(user_id=5),
    "unknown_type": broken(type="teleport"),
    "future_timestamp": broken(ts=NOW + 86_400_000),
    "bad_weight": broken(weight=1e300),
    "no_content": broken(text=None),
    "oversize": broken(text="x" * 40_000),
}


def test_publish_file_routes_every_line(
    tmp_path: Path, kafka: KafkaSettings, topics: TopicSettings
) -> None:
    lines: list[str] = []
    expected_good: dict[str, list[str]] = defaultdict(list)
    broken_at: dict[int, str] = {}
    broken = iter(BROKEN.items())
    for i in range(60):
        user = f"user-{i % 7}"
        lines.append(good(i, user))
        expected_good[user].append(f"e{i}")
        if i % 6 == 5:
            reason, line = next(broken, (None, None))  # type: ignore[arg-type]
            if reason is not None:
                lines.append(line)
                broken_at[len(lines)] = reason
        if i == 30:
            lines.append("")  # blank lines are not events
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")
    assert set(broken_at.values()) == set(BROKEN)  # every kind of bad input is exercised

    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "publish", "--json", str(path)],
        capture_output=True, text=True, env=topic_env(topics), timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["sent"] == 60
    assert report["dead_lettered"] == len(broken_at)
    assert report["blank_lines"] == 1

    events = read_topic_sync(kafka, topics.events, expect=60)
    assert len(events) == 60
    by_user: dict[str, list[str]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for rec in sorted(events, key=lambda r: (r.partition, r.offset)):
        body = json.loads(rec.value)
        assert rec.key == body["user_id"].encode()
        by_user[body["user_id"]].append(body["event_id"])
        partitions[body["user_id"]].add(rec.partition)
    assert by_user == expected_good  # every valid event, in order per user
    assert all(len(p) == 1 for p in partitions.values())  # one user, one partition

    letters = read_topic_sync(kafka, topics.dlq, expect=len(broken_at))
    assert len(letters) == len(broken_at)
    seen = {}
    for rec in letters:
        letter = DeadLetter.from_record(rec.key, rec.value, rec.headers)
        file_name, _, line_no = letter.source.rpartition(":")
        assert file_name == str(path)
        seen[int(line_no)] = letter.reason
        assert rec.value == lines[int(line_no) - 1].encode()  # the original bytes
        assert letter.stage == "publish" and letter.detail
    assert seen == broken_at


def test_publish_from_stdin(kafka: KafkaSettings, topics: TopicSettings) -> None:
    data = "\n".join([good(1, "a"), "oops", good(2, "a")]) + "\n"
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "publish", "-"],
        input=data, capture_output=True, text=True, env=topic_env(topics), timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "sent 2 events, 1 to the dead-letter topic (not_json: 1)"


def test_unreachable_broker_is_one_line_and_nonzero(tmp_path: Path, topics: TopicSettings) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(good(1, "a") + "\n")
    env = {
        **topic_env(topics),
        "INTEREST_KAFKA_BOOTSTRAP": "127.0.0.1:9",
        "INTEREST_KAFKA_REQUEST_TIMEOUT_S": "5",
    }
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "publish", str(path)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("error: cannot reach Kafka at 127.0.0.1:9")
    assert len(out.stderr.strip().splitlines()) == 1


def test_missing_file_is_one_line(topics: TopicSettings) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "streams.cli", "publish", "/no/such/file.jsonl"],
        capture_output=True, text=True, env=topic_env(topics), timeout=60,
    )  # fmt: skip
    assert out.returncode != 0 and out.stderr.strip().count("\n") == 0


def test_python_api(kafka: KafkaSettings, topics: TopicSettings) -> None:
    async def go() -> None:
        async with EventPublisher(kafka, topics) as pub:
            await pub.publish(
                {
                    "event_id": "x1",
                    "user_id": "ann",
                    "type": "like",
                    "ts": NOW,
                    "text": "GAN use cases",
                }
            )
            with pytest.raises(InvalidEvent) as info:
                await pub.publish({"event_id": "x2", "user_id": "ann", "type": "like", "ts": NOW})
            assert info.value.reason == "no_content"
            await pub.producer.flush()

    asyncio.run(go())
    [rec] = read_topic_sync(kafka, topics.events, expect=1)
    assert rec.key == b"ann"
    assert json.loads(rec.value)["text"] == "GAN use cases"
