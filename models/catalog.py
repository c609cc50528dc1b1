"""The item catalog: parse JSON-lines items and embed + upsert them into ``items`` in batches.

One line per item: ``{"id": "post-17", "text": "GAN use cases", "payload": {"tags": ["ml"]}}``.
``payload`` is optional and stored as the item's Qdrant payload (with ``item_id`` and ``text``),
so recommenders can filter on it. Items and events are embedded by the same model, or similarity
between them would be meaningless.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from models.encoder import Encoder, normalize_text
from models.store import InterestStore

MAX_ITEM_ID_CHARS = 256


class InvalidItem(ValueError):
    """A catalog line that cannot be loaded; the message names the line."""


@dataclass(frozen=True, slots=True)
class CatalogItem:
    item_id: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)


def parse_item(raw: bytes | str, where: str = "item") -> CatalogItem:
    """Parse one catalog line. Raises :class:`InvalidItem` with a one-line reason.

    >>> parse_item('{"id": "i1", "text": " Deep  learning ", "payload": {"tags": ["ml"]}}')
    CatalogItem(item_id='i1', text='Deep learning', payload={'tags': ['ml']})
    """
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidItem(f"{where}: not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InvalidItem(f"{where}: expected a JSON object")
    item_id = obj.get("id", obj.get("item_id"))
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if not isinstance(item_id, str) or not item_id.strip() or len(item_id) > MAX_ITEM_ID_CHARS:
        raise InvalidItem(f"{where}: id must be a non-empty string of at most 256 chars")
    text = obj.get("text")
    if not isinstance(text, str) or not normalize_text(text):
        raise InvalidItem(f"{where}: text must be a non-empty string")
    payload = obj.get("payload", {})
    if not isinstance(payload, dict):
        raise InvalidItem(f"{where}: payload must be a JSON object")
    return CatalogItem(item_id, normalize_text(text), payload)


def read_items(lines: Iterable[bytes | str], source: str) -> Iterator[CatalogItem]:
    """Parse a JSON-lines catalog, skipping blank lines; errors name ``source:line``."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield parse_item(line, f"{source}:{number}")


def load_items(
    items: Iterable[CatalogItem],
    encoder: Encoder,
    store: InterestStore,
    *,
    batch_size: int = 256,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Embed and upsert ``items`` in batches; return the count.

    Each batch is one model call, one retrieve (the live fields to keep) and one upsert.
    """
    total = 0
    batch: list[CatalogItem] = []

    def flush() -> None:
        nonlocal total
        vectors = encoder.encode([i.text for i in batch])
        store.upsert_items(
            [
                (i.item_id, v, {**i.payload, "item_id": i.item_id, "text": i.text})
                for i, v in zip(batch, vectors, strict=True)
            ]
        )
        total += len(batch)
        if progress is not None:
            progress(len(batch))
        batch.clear()

    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return total
