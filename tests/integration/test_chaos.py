"""The chaos run, small: ``python -m bench.chaos`` with 3,000 events of 300 users, one kill -9 of
each worker kind, a broker restart and a 5 s store outage, on its own broker (port 29405, not the
shared test broker: it is restarted), then every user's vectors checked against an offline
recompute. Plus the checker itself: it must see a lost, a doubled and a drifted event."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.chaos.verify import compare
from models.store import StoredUser
from streams.contracts.events import Event

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
#: The run's own broker (controller on the next port) and the embed worker's API: fixed, below
#: the kernel's ephemeral range (32768-60999), apart from the other tests' ports.
BROKER_PORT = int(os.environ.get("INTEREST_TEST_CHAOS_BROKER_PORT", "29405"))
API_PORT = BROKER_PORT + 2


def test_small_chaos_run_loses_nothing_and_applies_nothing_twice(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    command = [
        sys.executable, "-m", "bench.chaos", "--events", "3000", "--users", "300",
        "--kills", "1", "--outage-s", "5", "--publish-s", "40", "--texts", "120",
        "--broker-port", str(BROKER_PORT), "--api-port", str(API_PORT),
        "--drain-timeout-s", "90", "--dir", str(tmp_path / "run"), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    print(done.stdout[-4000:], done.stderr[-4000:], sep="\n")
    result = json.loads(out.read_text())
    run, checked = result["run"], result["verify"]
    assert run["kills"] == {"stream": 1, "embed": 1}
    assert len(run["broker_restarts"]) == 1
    assert result["logs"]["embed_store_retries_logged"] > 0, "the outage was never felt"
    assert checked["log"]["duplicates"] >= 150 and checked["log"]["invalid"] >= 30
    comparison = checked["comparison"]
    assert comparison["users"] == 300 and comparison["events_expected"] == 3000
    assert comparison["events_lost"] == 0 and comparison["events_applied_twice"] == 0
    assert comparison["users_missing"] == comparison["seq_mismatches"] == 0
    assert comparison["vector_mismatches"] == 0 and comparison["max_abs_diff"] <= 1e-5
    assert checked["dead_letters"]["invalid_missing"] == 0
    assert run["drained_at_s"] is not None
    assert result["passed"] and done.returncode == 0
    assert not (tmp_path / "run").exists()  # a passing run leaves nothing behind


def test_the_checker_sees_lost_doubled_and_drifted_events() -> None:
    events = {
        u: [Event(f"{u}-e{k}", u, "click", 1_750_000_000_000 + k, 1.0, text="t") for k in (1, 2)]
        for u in ("ok", "lost", "twice", "drift", "gone")
    }
    v = np.eye(4, dtype=np.float32)[0]
    want = {u: {"short_term": v} for u in events}

    def point(seq: int, folded: int, vector: np.ndarray = v) -> StoredUser:
        return StoredUser({"short_term": vector}, {"seq": seq, "events_folded": folded})

    drifted = np.array([1.0, 1e-4, 0, 0], dtype=np.float32)
    got = {"ok": point(2, 2), "lost": point(1, 1), "twice": point(3, 3),
           "drift": point(2, 2, drifted)}  # fmt: skip
    c = compare(events, want, got, atol=1e-5)
    assert (c.users_missing, c.events_lost, c.events_applied_twice) == (1, 3, 1)
    assert (c.seq_mismatches, c.vector_mismatches) == (2, 1)
    assert not c.ok
    assert compare({"ok": events["ok"]}, want, {"ok": point(2, 2)}, atol=1e-5).ok
