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
``interest.dlq.truncated``  only when cut: the original sizes, ``key=K value=V`` (bytes)
``interest.dlq.sha256``     only when cut: SHA-256 (hex) of the original value
=========================== ===========================================================

A dead letter carries at most :data:`MAX_CARRIED` bytes of the original key and of the value:
the broker accepts records up to ~1 MiB but a producer sends at most 1,000,000 bytes, so an
oversize record carried whole could not be dead-lettered at all -- the stream worker would stop
on it, and meet it again at every restart. What is cut is said in the headers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

REASON = "interest.dlq.reason"
DETAIL = "interest.dlq.detail"
SOURCE = "interest.dlq.source"
STAGE = "interest.dlq.stage"
TS = "interest.dlq.ts"

TRUNCATED = "interest.dlq.truncated"
SHA256 = "interest.dlq.sha256"

_MAX_DETAIL = 500
#: Most bytes of the original key, and of the value, a dead letter carries.
MAX_CARRIED = 64 * 1024


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

    def carried_key(self) -> bytes | None:
        """The key as the dead letter carries it (at most :data:`MAX_CARRIED` bytes)."""
        return None if self.key is None else self.key[:MAX_CARRIED]

    def carried_value(self) -> bytes:
        """The value as the dead letter carries it (at most :data:`MAX_CARRIED` bytes).

        >>> DeadLetter(b"u", b"x" * 70_000, "oversize", "", "", "stream", 0).carried_value()[-3:]
        b'xxx'
        >>> len(DeadLetter(b"u", b"x" * 70_000, "oversize", "", "", "stream", 0).carried_value())
        65536
        """
        return self.value[:MAX_CARRIED]

    def headers(self) -> list[tuple[str, bytes]]:
        detail = " ".join(self.detail.split())[:_MAX_DETAIL]
        out = [
            (REASON, self.reason.encode()),
            (DETAIL, detail.encode()),
            (SOURCE, self.source.encode()),
            (STAGE, self.stage.encode()),
            (TS, str(self.ts_ms).encode()),
        ]
        key_size = 0 if self.key is None else len(self.key)
        if max(key_size, len(self.value)) > MAX_CARRIED:
            out.append((TRUNCATED, f"key={key_size} value={len(self.value)}".encode()))
            out.append((SHA256, hashlib.sha256(self.value).hexdigest().encode()))
        return out

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
