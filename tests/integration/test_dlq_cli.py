"""Dead letters one command away: `publish` lists each line it rejected (number, reason, detail),
`dlq` shows what the dead-letter topic holds (reason, detail, source, the original record),
`dlq --tail` follows it. Real CLI processes against the real broker."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.settings import KafkaSettings, TopicSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streams.cli"]


@pytest.fixture
def env(topics: TopicSettings, kafka: KafkaSettings) -> dict[str, str]:
    return {
        **os.environ,
        "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "INTEREST_TOPICS_EVENTS": topics.events,
        "INTEREST_TOPICS_DLQ": topics.dlq,
        "INTEREST_TOPICS_UPDATES": topics.updates,
        "INTEREST_TOPICS_PARTITIONS": str(topics.partitions),
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def line(ts: object, event_id: str = "e") -> str:
    return json.dumps(
        {"event_id": event_id, "user_id": "u1", "type": "click", "ts": ts, "text": "jazz"}
    )


def test_publish_lists_rejected_lines_and_dlq_shows_them(
    tmp_path: Path, env: dict[str, str]
) -> None:
    now_ms = int(time.time() * 1000)
    lines = [
        line(now_ms, "e1"),
        "{this is not json",
        line(now_ms, "e2"),
        line(now_ms // 1000, "e3"),  # epoch seconds: would be January 1970
        line(86_400_000, "e4"),  # a placeholder in 1970
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    published = cli(env, "publish", str(path))
    assert published.returncode == 0, published.stderr
    assert published.stdout.strip() == (
        "sent 2 events, 3 to the dead-letter topic "
        "(not_json: 1, past_timestamp: 1, seconds_timestamp: 1)"
    )
    listed = published.stderr.splitlines()
    assert [entry.split(": ")[:2] for entry in listed[:3]] == [
        [f"{path}:2", "not_json"],
        [f"{path}:4", "seconds_timestamp"],
        [f"{path}:5", "past_timestamp"],
    ]
    assert f"send epoch milliseconds ({now_ms // 1000 * 1000})" in listed[1]
    assert "interest-stream dlq" in listed[3]

    shown = cli(env, "dlq", "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["total"] == doc["shown"] == 3
    by_source = {d["source"]: d for d in doc["dead_letters"]}
    assert set(by_source) == {f"{path}:2", f"{path}:4", f"{path}:5"}
    for number in (2, 4, 5):
        letter = by_source[f"{path}:{number}"]
        assert letter["record"] == lines[number - 1]  # the original record, whole
        assert letter["stage"] == "publish" and letter["detail"]
    assert by_source[f"{path}:4"]["reason"] == "seconds_timestamp"

    text = cli(env, "dlq")
    assert text.returncode == 0, text.stderr
    assert "  source  " + f"{path}:2" in text.stdout
    assert "  record  {this is not json" in text.stdout
    assert "  detail  ts 86400000 (1970-01-02T00:00:00Z) is before" in text.stdout
    assert text.stdout.rstrip().endswith(f"3 dead letters in {env['INTEREST_TOPICS_DLQ']}")

    newest = json.loads(cli(env, "dlq", "--json", "--last", "1").stdout)
    assert newest["total"] == 3 and newest["shown"] == 1


def test_publish_json_lists_rejected_lines(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(line(int(time.time() * 1000)) + "\n" + "[1, 2]\n")
    published = cli(env, "publish", "--json", str(path))
    assert published.returncode == 0, published.stderr
    report = json.loads(published.stdout)
    assert report["rejected"] == [
        {
            "source": f"{path}:2",
            "line": 2,
            "reason": "not_object",
            "detail": "expected a JSON object, got list",
        }
    ]
    assert report["rejected_not_listed"] == 0


def read_line(stream: object, timeout_s: float) -> str:
    assert hasattr(stream, "readline") and hasattr(stream, "fileno")
    ready, _, _ = select.select([stream], [], [], timeout_s)
    assert ready, "nothing printed in time"
    text: str = stream.readline()
    return text


def test_dlq_tail_follows_new_dead_letters(tmp_path: Path, env: dict[str, str]) -> None:
    tail = subprocess.Popen(
        [*CLI, "dlq", "--tail", "--json"], env=env, cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert "following" in read_line(tail.stderr, 60)  # the topic need not exist yet
        path = tmp_path / "late.jsonl"
        path.write_text("not an event\n")
        assert cli(env, "publish", str(path)).returncode == 0
        letter = json.loads(read_line(tail.stdout, 60))
        assert letter["source"] == f"{path}:1" and letter["reason"] == "not_json"
        assert letter["record"] == "not an event"
        tail.send_signal(signal.SIGINT)
        assert tail.wait(timeout=30) == 0
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


def test_dlq_of_a_topic_not_created_yet(env: dict[str, str]) -> None:
    shown = cli(env, "dlq")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == (
        f"no dead letters: topic {env['INTEREST_TOPICS_DLQ']} does not exist yet"
    )
    again = cli(env, "dlq", "--json")
    assert json.loads(again.stdout)["exists"] is False  # reading it did not create it
