"""The popularity topic's record (``interest.items.popularity``, key = item_id, compacted):
what the stream workers emit and the embed workers apply to the items' ``popularity`` payload."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass


class InvalidRecord(ValueError):
    """A record on a popularity topic this version cannot read."""


@dataclass(frozen=True, slots=True)
class PopularityUpdate:
    """A record of the popularity topic (key = item_id): the item's count at ``as_of_ms``."""

    item_id: str
    popularity: float
    as_of_ms: int
    half_life_s: float

    def to_json(self) -> bytes:
        body = {
            "v": 1,
            "item_id": self.item_id,
            "popularity": self.popularity,
            "as_of_ms": self.as_of_ms,
            "half_life_s": self.half_life_s,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | None) -> PopularityUpdate:
        try:
            body = json.loads(raw or b"")
            if body["v"] != 1:
                raise InvalidRecord(f"popularity record version {body['v']!r}")
            update = cls(
                item_id=str(body["item_id"]),
                popularity=float(body["popularity"]),
                as_of_ms=int(body["as_of_ms"]),
                half_life_s=float(body["half_life_s"]),
            )
        except InvalidRecord:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise InvalidRecord(f"unreadable popularity record: {exc}") from exc
        if not (update.popularity >= 0 and math.isfinite(update.popularity)):
            raise InvalidRecord(f"popularity must be finite and >= 0: {update.popularity}")
        if not update.item_id:
            raise InvalidRecord("empty item_id")
        return update
