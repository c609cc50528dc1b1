"""An earlier version's store, written as those versions wrote it: qdrant-client local mode.

Versions before the embedded engine opened ``QdrantClient(path=INTEREST_QDRANT_PATH)``, created
``users`` (one cosine named vector per dimension) and ``items`` (cosine ``content``) without payload
indexes, and upserted points with ``uuid5`` ids. Local mode keeps vectors as written (it does not
normalise cosine vectors on write), so the vectors here are deliberately not unit vectors.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client.http import models as qm

from models.store import item_point_id, user_point_id

DIM = 8
USER_VECTORS = ["short_term", "long_term", "search", "negative", "interest_0", "interest_1"]


def user_payload(user_id: str, seq: int) -> dict[str, Any]:
    """A payload shaped like the embed workers' (what ``profile`` reads)."""
    return {
        "user_id": user_id,
        "seq": seq,
        "updated_at": 1_700_000_000_000 + seq,
        "events_folded": seq,
        "state": {
            "dimensions": {
                "short_term": {"count": seq, "ref_ts_ms": 1_700_000_000_000, "mass": 1.5}
            },
            "interests": [{"slot": 0, "count": 2, "label": "deep learning", "weight": 0.7}],
        },
        "profile": [{"label": "deep learning", "weight": 0.7}, {"label": "GANs", "weight": 0.25}],
        "recent_items": ["i1", "i2"],
    }


def write_legacy_store(
    path: Path,
    *,
    users: int = 40,
    items: int = 30,
    extra_collection: str | None = "scratch",
    seed: int = 7,
) -> dict[str, dict[str, qm.PointStruct]]:
    """Write the folder; return the points written, ``{collection: {point id: point}}``.

    User ``u{n}`` has every vector when n % 3 == 0, only ``short_term`` and ``interest_1`` when
    n % 3 == 1, and none at all when n % 3 == 2 (a user whose events had no vector yet).
    """
    rng = np.random.default_rng(seed)

    def vec() -> list[float]:
        return [float(x) for x in rng.normal(size=DIM) * 3.0]

    params = qm.VectorParams(size=DIM, distance=qm.Distance.COSINE)
    written: dict[str, dict[str, qm.PointStruct]] = {"users": {}, "items": {}}
    for n in range(users):
        names = USER_VECTORS if n % 3 == 0 else ["short_term", "interest_1"] if n % 3 == 1 else []
        pid = user_point_id(f"u{n}")
        written["users"][pid] = qm.PointStruct(
            id=pid, vector={name: vec() for name in names}, payload=user_payload(f"u{n}", n + 1)
        )
    for n in range(items):
        pid = item_point_id(f"i{n}")
        payload = {"item_id": f"i{n}", "text": f"item {n} ✓", "popularity": n / 4, "tags": ["a", n]}
        if n % 5 == 0:
            payload["meta"] = {"nested": {"deep": [1.5, None, True]}, "big": 2**53 + 1}
        written["items"][pid] = qm.PointStruct(id=pid, vector={"content": vec()}, payload=payload)

    client = QdrantClient(path=str(path))
    try:
        client.create_collection("users", vectors_config=dict.fromkeys(USER_VECTORS, params))
        client.create_collection("items", vectors_config={"content": params})
        for name, points in written.items():
            client.upsert(name, points=list(points.values()), wait=True)
        if extra_collection:
            client.create_collection(extra_collection, vectors_config={"x": params})
            client.upsert(extra_collection, points=[qm.PointStruct(id=1, vector={"x": vec()})])
    finally:
        client.close()
    return written


def folder_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` by relative name (to prove a folder was not touched)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }
