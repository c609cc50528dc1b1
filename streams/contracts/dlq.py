"""Dead letters: what goes to ``interest.events.dlq`` and how to read it back. No I/O.

A dead letter keeps the producer's original key and value bytes untouched (so it can be fixed and
replayed as-is) and carries the why in headers, like Kafka Connect's ``errors.deadletterqueue``:

=========================== ===========================================================
header                      value
=========================== ===========================================================
``interest.dlq.reason``     a stable code from :data:`streams.contracts.events.REASONS`
``interest.dlq.detail``     one human-readable line
``interest.dlq.source``     where it came from: ``topic/partition/offset`` or ``file:line``
``interest.dlq.stage``      which component rejected it (``publish``, ``stream`` …)
``interest.dlq.ts``         wall-clock ms of the rejection
=========================== ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

REASON = "interest.dlq.reason"
DETAIL = "interest.dlq.detail"
SOURCE = "interest.dlq.source"
STAGE = "interest.dlq.stage"
TS = "interest.dlq.ts"

_MAX_DETAIL = 500


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected record, ready to produce (``headers()``) or read back (``from_headers``)."""

    key: bytes | None
    value: bytes
    reason: str
    detail: str
    source: str
    stage: str
    ts_ms: int

    def headers(self) -> list[tuple[str, bytes]]:
        detail = " ".join(self.detail.split())[:_MAX_DETAIL]
        return [
            (REASON, self.reason.encode()),
            (DETAIL, detail.encode()),
            (SOURCE, self.source.encode()),
            (STAGE, self.stage.encode()),
            (TS, str(self.ts_ms).encode()),
        ]

    @classmethod
    def from_record(
        cls, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]]
    ) -> DeadLetter:
        h = {k: v.decode(errors="replace") for k, v in headers}
        return cls(
            key=key,
            value=value or b"",
            reason=h.get(REASON, "unknown"),
            detail=h.get(DETAIL, ""),
            source=h.get(SOURCE, ""),
            stage=h.get(STAGE, ""),
            ts_ms=int(h.get(TS, "0") or 0),
        )


def kafka_source(topic: str, partition: int, offset: int) -> str:
    """The ``source`` of a record read from Kafka."""
    return f"{topic}/{partition}/{offset}"
