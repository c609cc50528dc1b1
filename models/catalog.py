"""The item catalog: parse JSON-lines items and embed + upsert them into ``items`` in batches.

One line per item: ``{"id": "post-17", "text": "GAN use cases", "payload": {"tags": ["ml"]}}``.
``payload`` is optional and stored as the item's Qdrant payload (with ``item_id`` and ``text``),
so recommenders can filter on it. Items and events are embedded by the same model, or similarity
between them would be meaningless.

What the model embeds for an item is :func:`item_embedding_text`: its text, followed by its
``payload["tags"]`` when ``ModelSettings.item_tags_in_text`` is on
(``INTEREST_MODEL_ITEM_TAGS_IN_TEXT``) — ``"Toy Story (1995). Animation, Children's, Comedy"``
rather than ``"Toy Story (1995)"``: tags often carry meaning the text lacks (a title says little
about its genre). The stored payload ``text`` stays the item's own text. Events are unchanged: an
event naming a loaded item gets the item's stored vector, an event with only text is embedded
from its text.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from models.encoder import Encoder, normalize_text
from models.settings import ModelSettings
from models.store import InterestStore

MAX_ITEM_ID_CHARS = 256


class InvalidItem(ValueError):
    """A catalog line that cannot be loaded; the message names the line."""


@dataclass(frozen=True, slots=True)
class CatalogItem:
    item_id: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def tags(self) -> tuple[str, ...]:
        """``payload["tags"]`` as strings (a single string is one tag; anything else: none)."""
        return item_tags(self.payload.get("tags"))

    def embedding_text(self, tags_in_text: bool) -> str:
        """What the model embeds for this item (see :func:`item_embedding_text`)."""
        return item_embedding_text(self.text, self.tags if tags_in_text else ())


def item_tags(raw: object) -> tuple[str, ...]:
    """Tags from a payload value: a list of strings (non-strings and blanks dropped, repeats
    kept once, each normalised) or one string; anything else gives none.

    >>> item_tags(["Comedy", " Drama ", 3, "", "Comedy"])
    ('Comedy', 'Drama')
    >>> item_tags("ml"), item_tags(None)
    (('ml',), ())
    """
    values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list | tuple) else []
    tags = (normalize_text(v) for v in values if isinstance(v, str))
    return tuple(dict.fromkeys(t for t in tags if t))


def item_embedding_text(text: str, tags: Iterable[str] = ()) -> str:
    """The string the model embeds for an item: ``text``, then ``. `` and the tags joined by
    ``, `` (no extra full stop after a text ending in ``.``, ``!`` or ``?``). Normalised like the
    encoder normalises, so it is also the encoder's cache key.

    >>> item_embedding_text("Toy Story (1995)", ["Animation", "Children's", "Comedy"])
    "Toy Story (1995). Animation, Children's, Comedy"
    >>> item_embedding_text("Why GANs?", ["ml"]), item_embedding_text("GAN use cases")
    ('Why GANs? ml', 'GAN use cases')
    """
    text = normalize_text(text)
    joined = ", ".join(t for t in (normalize_text(t) for t in tags) if t)
    if not joined:
        return text
    return f"{text} {joined}" if text.endswith((".", "!", "?")) else f"{text}. {joined}"


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
    tags_in_text: bool | None = None,
) -> int:
    """Embed and upsert ``items`` in batches, then index them; return the count.

    Each batch is one model call, one retrieve (the live fields to keep) and one upsert; the
    embedded engine builds the items' HNSW index at the end (``InterestStore.optimize``), so
    recommendations search an index, not every item. The
    model embeds :meth:`CatalogItem.embedding_text`; ``tags_in_text`` None reads
    ``ModelSettings().item_tags_in_text`` (``INTEREST_MODEL_ITEM_TAGS_IN_TEXT``).
    """
    if tags_in_text is None:
        tags_in_text = ModelSettings().item_tags_in_text
    total = 0
    batch: list[CatalogItem] = []

    def flush() -> None:
        nonlocal total
        vectors = encoder.encode([i.embedding_text(tags_in_text) for i in batch])
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
    if total:
        store.optimize(users=False)
    return total
