"""Forgetting a user through the real pipeline: `interest-stream user delete` and
``DELETE /v1/users/{id}`` against a real `run` (stream worker, embed worker with the model,
embedded Qdrant) on the real broker; then a restart whose stream state comes back from the
changelog alone, and a new event that starts a new profile."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka_testing import RunProcess, run_env

from streams.settings import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streams.cli"]
T0 = 1_790_000_000_000


def cli(
    env: dict[str, str], *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, timeout=120,
        input=None if stdin is None else stdin.decode(), text=True,
    )  # fmt: skip


def event(user: str, n: int, text: str) -> bytes:
    body = {"event_id": f"{user}-{n}-{text}", "user_id": user, "type": "read"}
    return json.dumps({**body, "ts": T0 + n * 1000, "text": text}).encode()


def profile(api: str, user: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{api}/v1/users/{user}", timeout=30) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


def wait_until(
    check: Callable[[], bool], what: str, run: RunProcess, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what} not within {timeout_s} s\n{run.logs()}"
        time.sleep(0.3)


def test_a_deleted_user_stays_deleted_across_a_restart_and_starts_afresh(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    env = run_env(kafka, tmp_path, f"del-{uuid.uuid4().hex[:8]}")
    api = f"http://127.0.0.1:{env['INTEREST_API_PORT']}"
    run = RunProcess.start(env, tmp_path / "first.out")
    lines = [event("alice", n, t) for n, t in enumerate(["sailing", "knots", "harbours", "tides"])]
    lines += [event("bob", n, t) for n, t in enumerate(["chess openings", "endgames"])]
    published = cli(env, "publish", "-", stdin=b"\n".join(lines) + b"\n")
    assert published.returncode == 0, published.stderr
    wait_until(lambda: profile(api, "alice").get("seq") == 4, "alice folded", run)
    wait_until(lambda: profile(api, "bob").get("seq") == 2, "bob folded", run)

    # The CLI: waits until both workers have applied it.
    deleted = cli(env, "user", "delete", "alice", "--json", "--wait", "90")
    assert deleted.returncode == 0, deleted.stderr
    receipt = json.loads(deleted.stdout)
    assert receipt["applied"] is True and receipt["topic"] == env["INTEREST_TOPICS_EVENTS"]
    assert profile(api, "alice")["found"] is False
    assert profile(api, "bob")["seq"] == 2  # nobody else is touched

    # The API: 202 with where the request went; applied shortly after.
    request = urllib.request.Request(f"{api}/v1/users/bob", method="DELETE")
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 202
        accepted = json.loads(resp.read())
    assert accepted["status"] == "accepted" and accepted["user_id"] == "bob"
    wait_until(lambda: profile(api, "bob")["found"] is False, "bob deleted", run)

    # Bad requests: a one-line error, a 400 with the reason; nothing written.
    empty = cli(env, "user", "delete", " ")
    assert empty.returncode == 1
    assert empty.stderr.strip() == "error: bad_control: user_id must not be empty"
    too_long = urllib.request.Request(f"{api}/v1/users/{'x' * 300}", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(too_long, timeout=30)
    assert info.value.code == 400
    assert json.loads(info.value.read()) == {"error": "user_id has 300 chars > limit 256"}

    # Restart with the stream worker's local state gone: it comes back from the changelog
    # alone, where the delete left a tombstone; nothing of alice's comes back.
    assert run.stop() == 0, run.logs()
    shutil.rmtree(tmp_path / "stream")
    run = RunProcess.start(env, tmp_path / "second.out")
    try:
        again = cli(env, "publish", "-", stdin=event("alice", 9, "baking bread") + b"\n")
        assert again.returncode == 0, again.stderr
        wait_until(lambda: profile(api, "alice").get("found") is True, "alice's new event", run)
        fresh = profile(api, "alice")
        assert (fresh["seq"], fresh["events_folded"]) == (1, 1), fresh  # numbered afresh
        assert fresh["recent_items"] == []
        assert profile(api, "bob")["found"] is False
    finally:
        assert run.stop() == 0, run.logs()
