"""Event times that cannot be right are rejected with a reason that says what to send instead:
epoch seconds where milliseconds belong (they would land in January 1970), placeholders and
far-past times, microseconds; the bounds are settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from streams.contracts.events import (
    DEFAULT_RULES,
    FUTURE_TIMESTAMP,
    PAST_TIMESTAMP,
    REASONS,
    SECONDS_TIMESTAMP,
    EventRules,
    InvalidEvent,
    parse_event,
)
from streams.settings import IntakeSettings

NOW = int(datetime(2026, 12, 6, 12, 0, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000


def event(ts: object) -> bytes:
    return json.dumps(
        {"event_id": "e1", "user_id": "u1", "type": "click", "ts": ts, "text": "jazz"}
    ).encode()


def rejected(ts: object, rules: EventRules = DEFAULT_RULES) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(event(ts), now_ms=NOW, rules=rules)
    assert info.value.reason in REASONS
    return info.value


def test_epoch_seconds_are_rejected_with_the_milliseconds_to_send() -> None:
    seconds = NOW // 1000 - 60
    error = rejected(seconds)
    assert error.reason == SECONDS_TIMESTAMP
    assert f"{seconds * 1000}" in error.detail and "2026-12-06T11:59:00Z" in error.detail
    assert parse_event(event(seconds * 1000), now_ms=NOW).ts_ms == seconds * 1000


def test_fractional_epoch_seconds_are_recognised_too() -> None:
    assert rejected(NOW / 1000 - 0.5).reason == SECONDS_TIMESTAMP


@pytest.mark.parametrize("ts", [0, 1, 86_400_000, "1970-01-01T00:00:00Z", "1989-12-31T23:59:59Z"])
def test_placeholders_and_times_before_the_earliest_are_past(ts: object) -> None:
    error = rejected(ts)
    assert error.reason == PAST_TIMESTAMP
    assert "1990-01-01T00:00:00Z" in error.detail and "INTEREST_INTAKE_EARLIEST_TS" in error.detail


def test_old_histories_after_the_earliest_pass_by_default() -> None:
    movielens = int(datetime(1997, 9, 20, tzinfo=UTC).timestamp() * 1000)
    assert parse_event(event(movielens), now_ms=NOW).ts_ms == movielens


def test_an_age_limit_rejects_older_events() -> None:
    rules = EventRules(max_age_ms=30 * DAY_MS)
    assert parse_event(event(NOW - 29 * DAY_MS), now_ms=NOW, rules=rules).ts_ms == NOW - 29 * DAY_MS
    error = rejected(NOW - 31 * DAY_MS, rules)
    assert error.reason == PAST_TIMESTAMP
    assert "31.0 days old" in error.detail and "INTEREST_INTAKE_MAX_AGE_S" in error.detail


def test_seconds_outside_the_age_limit_are_past_not_seconds() -> None:
    rules = EventRules(max_age_ms=DAY_MS)
    assert rejected(NOW // 1000 - 2 * 86_400, rules).reason == PAST_TIMESTAMP


def test_microseconds_are_future_with_a_hint() -> None:
    error = rejected(NOW * 1000)
    assert error.reason == FUTURE_TIMESTAMP and "microseconds" in error.detail


def test_the_bounds_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEREST_INTAKE_EARLIEST_TS", "2020-01-01")
    monkeypatch.setenv("INTEREST_INTAKE_MAX_AGE_S", "3600")
    rules = IntakeSettings().rules()
    assert rules.earliest_ms == int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000)
    assert rules.max_age_ms == 3_600_000
    assert rejected("2019-06-01T00:00:00Z", rules).reason == PAST_TIMESTAMP
    assert rejected(NOW - 2 * 3_600_000, rules).reason == PAST_TIMESTAMP
