"""The state benchmark's pure parts: the users it writes into the changelog are states the worker
reads and continues correctly, and its reading of faust's recovery log and of /healthz gives the
numbers it reports.

The run itself needs a broker and stream workers (``python -m bench.state_bench``).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import state_bench as sb
from streams.contracts.events import Event
from streams.stream.types import partition_for
from streams.stream.userstate import Applied, StateLimits, UserState, has_pending

NOW = 1_760_000_000_000
LIMITS = StateLimits()


def test_events_per_user_average_three_over_a_cycle() -> None:
    counts = [sb.events_for(i) for i in range(500)]
    assert min(counts) == 1 and max(counts) == 5
    assert sum(counts) / len(counts) == 3


@pytest.mark.parametrize("i", [0, 1, 4, 12_345])
def test_filled_state_is_flushed_numbered_and_continues(i: int) -> None:
    raw = sb.user_state(i, NOW, LIMITS).to_bytes()
    assert not has_pending(raw)
    state = UserState.from_bytes(raw)
    n = sb.events_for(i)
    assert state.last_n == n and not state.pending
    windows = state.activity_counts(LIMITS)
    assert sum(windows[str(86_400_000)].values()) == n  # every event counted in the day
    uid = sb.user_id(i)
    # A retried event is a duplicate (the dedupe ring holds the user's events) ...
    again = Event(f"{uid}-e0", uid, "view", NOW, 1.0)
    assert state.apply(again, seen_ms=NOW, source=0, offset=0, limits=LIMITS).outcome == (
        Applied.DUPLICATE
    )
    # ... and a new event at the fresh events topic's first offset is new, numbered n + 1.
    new = Event("fresh", uid, "click", NOW, 1.0)
    assert state.apply(new, seen_ms=NOW, source=0, offset=1, limits=LIMITS).outcome == Applied.NEW
    assert state.build_job(uid, now_ms=NOW, limits=LIMITS).events[-1].n == n + 1


def test_changelog_record_goes_to_the_users_partition() -> None:
    for i in range(50):
        key, value, partition = sb.changelog_record(i, 4, NOW, LIMITS)
        assert key == sb.user_id(i).encode()
        assert partition == partition_for(key, 4)
        assert UserState.from_bytes(value).last_n == sb.events_for(i)
    assert {sb.changelog_record(i, 4, NOW, LIMITS)[2] for i in range(50)} == {0, 1, 2, 3}


def faust_table(title: str, column: str, topic: str, values: dict[int, int]) -> str:
    """A table as faust logs it (terminaltables' AsciiTable, repeated topics as a ditto mark)."""
    rows = [f"+{title}" + "-" * 10 + "+-----------+--------+", f"| topic | partition | {column} |"]
    rows.append("+------+-----------+--------+")
    for k, (p, v) in enumerate(sorted(values.items())):
        rows.append(f"| {topic if k == 0 else sb.DITTO} | {p} | {v} |")
    rows.append("+------+-----------+--------+ ")
    return "\n".join(rows)


def recovery_log(app: str, highwater: dict[int, int], start: dict[int, int]) -> str:
    user = f"{app}-user-state-changelog"
    item = f"{app}-item-popularity-changelog"
    return "\n".join([
        "[2026-01-01 10:00:00,000] [1] [INFO] [^---OrderedRecovery]: Highwater for active "
        "changelog partitions:",
        faust_table("Highwater - Active", "highwater", user, highwater),
        faust_table("Highwater - Active", "highwater", item, {0: 99}),  # another table
        "[2026-01-01 10:00:00,001] [1] [INFO] [^---OrderedRecovery]: active offsets at start:",
        faust_table("Reading Starts At - Active", "offset", user, start),
        faust_table("Reading Starts At - Active", "offset", item, {0: -1}),
        "[2026-01-01 10:00:00,002] [1] [INFO] [^---OrderedRecovery]: Recovery complete",
    ])  # fmt: skip


def test_recoveries_count_what_each_recovery_had_to_read() -> None:
    first = recovery_log("a", {0: 457, 1: 523, 2: -1}, {0: -1, 1: -1, 2: -1})  # nothing local
    restart = recovery_log("a", {0: 459, 1: 523, 2: -1}, {0: 457, 1: 523, 2: -1})  # the tail
    rebalance = recovery_log("a", {1: 600}, {1: 523})
    got = sb.recoveries("\nnoise | 1 | 2 |\n".join([first, restart, rebalance]))
    assert got == [
        {"partitions": 3, "to_read": 458 + 524, "log_records": 458 + 524},
        {"partitions": 3, "to_read": 2, "log_records": 460 + 524},
        {"partitions": 1, "to_read": 77, "log_records": 601},
    ]
    assert sb.recoveries(first, table="item-popularity") == [
        {"partitions": 1, "to_read": 100, "log_records": 100}
    ]
    assert sb.recoveries("no recovery logged") == []


def test_healthy_needs_ok_and_the_asked_partitions() -> None:
    body: dict[str, Any] = {"status": "ok", "assigned": ["t/0", "t/1"]}
    assert sb.healthy(body) and sb.healthy(body, 2)
    assert not sb.healthy(body, 4)
    assert not sb.healthy({"status": "rebalancing", "assigned": []})
    assert not sb.healthy(None)


def test_per_user_and_targets() -> None:
    assert sb.per_user(300.0, 100.0, 50) == 4.0
    assert math.isnan(sb.per_user(1.0, 0.0, 0))
    results: dict[str, Any] = {
        "sizes": {
            "10000": {"rocksdb": {"restart_s": 99.0, "rss_mb_restart": 5000.0}},
            "1000000": {"rocksdb": {"restart_s": 12.0, "rss_mb_restart": 1500.0}},
        },
        "throughput": {"ratio_best": 0.95},
    }
    t = sb.targets(results)
    assert t["users"] == 1_000_000 and t["at_1m"]
    assert (t["restart_s"]["met"], t["rss_mb"]["met"], t["throughput_ratio"]["met"]) == (
        True,
        False,
        True,
    )
    # RSS is the larger of after the first start and after the restart.
    results["sizes"]["1000000"]["rocksdb"].update(rss_mb_restart=200.0, rss_mb_first=900.0)
    assert sb.targets(results)["rss_mb"] == {"value": 900.0, "target": 1024, "met": True}
    none = sb.targets({"sizes": {}})
    assert none["restart_s"]["met"] is None and none["throughput_ratio"]["met"] is None
