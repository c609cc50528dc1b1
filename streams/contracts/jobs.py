"""``UpdateJob``: what a stream worker emits to ``interest.updates`` when a user is due. No I/O.

Schema (JSON, key = user_id), version 1::

    {
      "v": 1,
      "user_id": "u1",
      "seq": 42,                 # = n of the last event in the job; strictly increasing per user
      "events": [                # in the user's arrival order; n = the user's event number
        {"n": 41, "event_id": "e9", "type": "click", "weight": 1.0, "ts": 1700000000000,
         "item_id": "i3", "text": "...", "tags": ["ml"]},
        ...
      ],
      "activity": {"60000": {"click": 3, "view": 1}},   # window size ms -> counts by type
      "folded": {"view": 12},        # optional: events dropped to bound state, by type (counted,
                                     # never silently lost; their numbers are skipped)
      "first_seen_ms": 1700000000123,   # when the oldest event here entered the pipeline: its
                                        # Kafka timestamp, clamped to [last flush, arrival]
      "emitted_ms": 1700000000456
    }

Why ``seq`` is the number of the last event and events carry ``n``: after a crash a stream worker
may emit a job again with a different cut of the same events (the changelog and the output topic are
not written atomically). Every event keeps the number it was given, so a consumer that remembers the
last ``n`` it applied drops exactly the events it has already folded in, whatever the cut.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

JOB_SCHEMA_VERSION: Final = 1
#: A delete job's version. Not 1, so that an embed worker older than delete jobs dead-letters
#: one (``invalid_job``, visible) instead of reading it as an empty update and keeping the user.
DELETE_JOB_VERSION: Final = 2
DELETE_USER_OP: Final = "delete_user"


class InvalidJob(ValueError):
    """A record on interest.updates that this version cannot read."""


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event inside a job, numbered ``n`` (1, 2, 3 ...) in the user's arrival order."""

    n: int
    event_id: str
    type: str
    weight: float
    ts_ms: int
    item_id: str | None = None
    text: str | None = None
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": self.n,
            "event_id": self.event_id,
            "type": self.type,
            "weight": self.weight,
            "ts": self.ts_ms,
        }
        if self.item_id is not None:
            out["item_id"] = self.item_id
        if self.text is not None:
            out["text"] = self.text
        if self.tags:
            out["tags"] = list(self.tags)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> JobEvent:
        return cls(
            n=int(d["n"]),
            event_id=str(d["event_id"]),
            type=str(d["type"]),
            weight=float(d["weight"]),
            ts_ms=int(d["ts"]),
            item_id=d.get("item_id"),
            text=d.get("text"),
            tags=tuple(d.get("tags", ())),
        )


@dataclass(frozen=True, slots=True)
class UpdateJob:
    """One flush of one user's pending events."""

    user_id: str
    events: tuple[JobEvent, ...]
    first_seen_ms: int
    emitted_ms: int
    activity: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    folded: Mapping[str, int] = field(default_factory=dict)
    version: int = JOB_SCHEMA_VERSION

    @property
    def seq(self) -> int:
        """The number of the last event: strictly increasing over a user's jobs."""
        return self.events[-1].n if self.events else 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": self.version,
            "user_id": self.user_id,
            "seq": self.seq,
            "events": [e.to_dict() for e in self.events],
            "activity": {w: dict(c) for w, c in self.activity.items()},
            "first_seen_ms": self.first_seen_ms,
            "emitted_ms": self.emitted_ms,
        }
        if self.folded:
            out["folded"] = dict(self.folded)
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes) -> UpdateJob:
        """Parse a job; raises :class:`InvalidJob` on anything this version cannot read."""
        try:
            d = json.loads(raw)
            if not isinstance(d, dict):
                raise InvalidJob("job is not a JSON object")
            version = int(d.get("v", 0))
            if version != JOB_SCHEMA_VERSION:
                raise InvalidJob(f"job schema version {version} is not {JOB_SCHEMA_VERSION}")
            events = tuple(JobEvent.from_dict(e) for e in d["events"])
            if any(b.n <= a.n for a, b in itertools.pairwise(events)):
                raise InvalidJob("job events are not in increasing n order")
            job = cls(
                user_id=str(d["user_id"]),
                events=events,
                first_seen_ms=int(d["first_seen_ms"]),
                emitted_ms=int(d["emitted_ms"]),
                activity={
                    str(w): {str(t): int(c) for t, c in counts.items()}
                    for w, counts in d.get("activity", {}).items()
                },
                folded={str(t): int(c) for t, c in d.get("folded", {}).items()},
            )
        except InvalidJob:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidJob(f"malformed job: {exc!r}") from None
        if "seq" in d and int(d["seq"]) != job.seq:
            raise InvalidJob(f"seq {d['seq']} does not match the last event's n {job.seq}")
        return job


@dataclass(frozen=True, slots=True)
class DeleteUserJob:
    """Forget ``user_id``: emitted by the stream worker where it read the user's delete request
    (streams.contracts.control), in order with the user's update jobs on the same partition.

    Schema (JSON, key = user_id)::

        {"v": 2, "op": "delete_user", "user_id": "u1", "requested_at": 1700000000000,
         "emitted_ms": 1700000000456}

    The embed worker deletes the user's point; the user's jobs after it start a new profile
    (their events are numbered from 1 again, the stream state having been deleted too).
    """

    user_id: str
    requested_at_ms: int
    emitted_ms: int

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "v": DELETE_JOB_VERSION,
                "op": DELETE_USER_OP,
                "user_id": self.user_id,
                "requested_at": self.requested_at_ms,
                "emitted_ms": self.emitted_ms,
            }
        )


def parse_job(raw: bytes) -> UpdateJob | DeleteUserJob:
    """Parse a record of interest.updates: an update or a delete; :class:`InvalidJob` else.

    >>> parse_job(DeleteUserJob("u1", 5, 6).to_json())
    DeleteUserJob(user_id='u1', requested_at_ms=5, emitted_ms=6)
    """
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJob(f"malformed job: {exc}") from None
    if not isinstance(d, dict) or d.get("op") != DELETE_USER_OP:
        return UpdateJob.from_json(raw)
    try:
        if int(d.get("v", 0)) != DELETE_JOB_VERSION:
            raise InvalidJob(f"delete job version {d.get('v')!r} is not {DELETE_JOB_VERSION}")
        user_id = d["user_id"]
        if not isinstance(user_id, str) or not user_id:
            raise InvalidJob("delete job without a user_id")
        return DeleteUserJob(user_id, int(d.get("requested_at", 0)), int(d["emitted_ms"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidJob(f"malformed delete job: {exc!r}") from None
