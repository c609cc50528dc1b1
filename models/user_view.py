"""A user's stored point as people read it: the ``profile`` command and ``GET /v1/users/{id}``.

Pure: takes what :meth:`models.store.InterestStore.get_users` returns and builds a JSON-able
description — per dimension its freshness (last event time, events folded, decayed mass), the
labelled interest profile in the form ``{"deep learning": 0.7, "GAN use cases": 0.6}`` (highest
first), and optionally the raw named vectors.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from models.store import StoredUser


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC, or None."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def describe_user(
    user_id: str, stored: StoredUser | None, *, with_vectors: bool = False
) -> dict[str, Any]:
    """The readable view of one user; ``found`` is False for a user with no point yet."""
    if stored is None:
        return {"user_id": user_id, "found": False, "profile": {}, "dimensions": {}}
    payload = stored.payload
    state: Mapping[str, Any] = payload.get("state") or {}
    dimensions: dict[str, Any] = {}
    for name, dim in (state.get("dimensions") or {}).items():
        dimensions[name] = {
            "events": int(dim.get("count", 0)),
            "last_event": iso_ms(dim.get("ref_ts_ms")),
            "mass": round(float(dim.get("mass", 0.0)), 6),
            "has_vector": name in stored.vectors,
        }
    for slot in state.get("interests") or ():
        name = f"interest_{slot.get('slot')}"
        dimensions[name] = {
            "events": int(slot.get("count", 0)),
            "last_event": iso_ms(slot.get("ref_ts_ms")),
            "mass": round(float(slot.get("mass", 0.0)), 6),
            "has_vector": name in stored.vectors,
            "label": slot.get("label"),
            "weight": slot.get("weight"),
        }
    profile = {
        str(entry["label"]): float(entry["weight"])
        for entry in sorted(payload.get("profile") or (), key=lambda e: -float(e["weight"]))
    }
    view: dict[str, Any] = {
        "user_id": user_id,
        "found": True,
        "seq": payload.get("seq"),
        "updated_at": iso_ms(payload.get("updated_at")),
        "events_folded": payload.get("events_folded"),
        "profile": profile,
        "dimensions": dimensions,
        "recent_items": list(payload.get("recent_items") or ())[-10:],
        "skipped": dict(payload.get("skipped") or {}),
        "skipped_items": list(payload.get("skipped_items") or ()),
    }
    if with_vectors:
        view["vectors"] = {name: [float(x) for x in v] for name, v in stored.vectors.items()}
    return view


def format_user(view: Mapping[str, Any]) -> str:
    """Plain-text rendering of :func:`describe_user` for the terminal."""
    user = view["user_id"]
    if not view.get("found"):
        first = f"user {user}: no interest vectors yet (no events folded for this user)"
        return "\n".join([first, *model_lines(view)])
    lines = [
        f"user {user}: {view['events_folded']} events folded, seq {view['seq']}, "
        f"updated {view['updated_at']}",
        "interests: "
        + (", ".join(f"{label} {weight:.2f}" for label, weight in view["profile"].items()) or "-"),
        f"{'dimension':<14}{'events':>8}  {'last event':<27}{'mass':>10}  label",
    ]
    for name, dim in view["dimensions"].items():
        label = dim.get("label") or ""
        if dim.get("weight") is not None:
            label = f"{label} ({dim['weight']:.2f})"
        lines.append(
            f"{name:<14}{dim['events']:>8}  {dim['last_event'] or '-':<27}{dim['mass']:>10.3f}  "
            f"{label}"
        )
    lines[1:1] = skipped_lines(view)
    lines += model_lines(view)
    return "\n".join(lines)


#: How ``format_user`` words each skip reason recorded by the fold.
SKIP_REASONS = {
    "item_not_in_catalog": "item not in the catalog",
    "no_text": "no item and no text",
}


def skipped_lines(view: Mapping[str, Any]) -> list[str]:
    """Lines saying how many events got no vector and why, and which items were missing.

    >>> for line in skipped_lines({"skipped": {"item_not_in_catalog": 2}, "skipped_items": ["a"]}):
    ...     print(line)
    skipped for vectors: 2 events (2 item not in the catalog)
    items not in the catalog: a (load them with `interest-stream items load`)
    """
    counts: Mapping[str, int] = view.get("skipped") or {}
    total = sum(counts.values())
    if not total:
        return []
    why = ", ".join(f"{n} {SKIP_REASONS.get(r, r)}" for r, n in sorted(counts.items()) if n)
    lines = [f"skipped for vectors: {total} event{'' if total == 1 else 's'} ({why})"]
    if view.get("skipped_items"):
        items = ", ".join(view["skipped_items"])
        lines.append(
            f"items not in the catalog: {items} (load them with `interest-stream items load`)"
        )
    return lines


def model_lines(view: Mapping[str, Any]) -> list[str]:
    """The model line of a profile (``view["model"]``, added by the caller that knows the model).

    >>> model_lines({"model": {"name": "m", "languages": "English only"}})
    ['model: m, serves English only (INTEREST_MODEL_NAME changes it)']
    """
    model = view.get("model")
    if not model:
        return []
    return [f"model: {model['name']}, serves {model['languages']} (INTEREST_MODEL_NAME changes it)"]
