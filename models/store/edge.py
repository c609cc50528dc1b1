"""Embedded backend: Qdrant's own engine in this process (``qdrant-edge-py``).

One shard per collection, each in ``<path>/<collection>/``; the write-ahead log is on, so a write
is durable when ``update`` returns, and :meth:`EdgeBackend.close` flushes the segments before it
releases the folder. A folder belongs to one process: an exclusive ``flock`` on ``<path>/.lock``
is taken when the backend opens and held until it closes (another process gets
:class:`~models.store.base.StoreLockedError`; the running service serves the others over HTTP).

Surprises of qdrant-edge-py 0.9 that this module absorbs (keep them in mind on an upgrade):

- ``retrieve`` requires ``with_vector`` although the stubs mark it optional;
- ids come back as ``uuid.UUID`` (turned into strings here, as qdrant-client gives them);
- ``HasIdCondition`` takes a set, not a list;
- ordering by a payload field needs a range index on it, as on a server;
- the collection's configuration lives in the shard: vector names and sizes are read back from
  ``EdgeShard.load`` + ``info`` (no ``get_collection``), so this backend also keeps the layout it
  created in ``<path>/<collection>/interest-stream.json`` to describe the collection.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, cast

import qdrant_edge as qe
from qdrant_client.http import models as qm

import models.store.edge_query as tr
from models.store.base import (
    CollectionLayout,
    CollectionNotFound,
    EngineError,
    LegacyStoreError,
    PointIds,
    StoreError,
    StoreLockedError,
    UnsupportedRequest,
    WithPayload,
    WithVectors,
)

LAYOUT_FILE: Final = "interest-stream.json"
LOCK_FILE: Final = ".lock"
_DISTANCES: Final = {"Cosine": qe.Distance.Cosine, "Dot": qe.Distance.Dot}
_INDEX_KINDS: Final = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
}


def is_legacy_folder(path: Path) -> bool:
    """Whether ``path`` holds qdrant-client local mode's files (an earlier version's store)."""
    return (path / "meta.json").is_file() and (path / "collection").is_dir()


class EdgeBackend:
    """Collections as qdrant-edge shards under one folder (see the module doc)."""

    kind = "embedded"

    def __init__(self, path: Path | str, *, flush_interval_s: float = 5.0) -> None:
        """Open (and lock) the folder. Writes are WAL-logged at once; every ``flush_interval_s``
        of writing the segments are flushed too, which lets the engine trim its WAL (it grows
        ~15 KB per user write until then), as a server does every 5 s."""
        self.flush_interval_s = flush_interval_s
        self._last_flush = time.monotonic()
        self.path = Path(path).expanduser()
        self.path.mkdir(parents=True, exist_ok=True)
        if is_legacy_folder(self.path):
            raise LegacyStoreError(
                f"{self.path} holds a store of an earlier interest-stream version (qdrant-client "
                f"local mode); convert it in place with `interest-stream store migrate --from "
                f"{shlex.quote(str(self.path))}` (the old files are kept in "
                f"{self.path}.local-mode-backup)"
            )
        self._lock: int | None = _take_lock(self.path / LOCK_FILE)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._layouts: dict[str, dict[str, Any]] = {}

    # -- collections ---------------------------------------------------------------------------

    def _dir(self, collection: str) -> Path:
        if not collection or "/" in collection or collection.startswith("."):
            raise StoreError(f"invalid collection name {collection!r}")
        return self.path / collection

    def collection_exists(self, collection: str) -> bool:
        return collection in self._shards or (self._dir(collection) / LAYOUT_FILE).is_file()

    def _shard(self, collection: str) -> qe.EdgeShard:
        shard = self._shards.get(collection)
        if shard is not None:
            return shard
        folder = self._dir(collection)
        if not (folder / LAYOUT_FILE).is_file():
            raise CollectionNotFound(f"Collection {collection} not found")
        self._layouts[collection] = json.loads((folder / LAYOUT_FILE).read_text())
        shard = qe.EdgeShard.load(str(folder))
        self._shards[collection] = shard
        return shard

    def create_collection(self, collection: str, layout: CollectionLayout) -> None:
        folder = self._dir(collection)
        if folder.exists():  # a half-made collection (no layout file): start it again
            shutil.rmtree(folder)
        shard = qe.EdgeShard.create(str(folder), edge_config(layout))
        for field, kind in layout.payload_indexes.items():
            shard.update(qe.UpdateOperation.create_field_index(field, _INDEX_KINDS[kind]))
        description = {
            "vectors": {
                **{name: [layout.dimension, "Cosine"] for name in layout.vector_names},
                **{name: [size, dist] for name, (size, dist) in layout.extra_vectors.items()},
            },
            "layout": {
                "storage": layout.storage,
                "searched": layout.searched,
                "hnsw_m": layout.hnsw_m,
                "hnsw_ef_construct": layout.hnsw_ef_construct,
                "payload_on_disk": layout.payload_on_disk,
                "payload_indexes": dict(layout.payload_indexes),
            },
        }
        shard.flush()
        # Written last: a folder without it is a creation that did not finish.
        self._write_layout(collection, description)
        self._shards[collection] = shard

    def _write_layout(self, collection: str, description: dict[str, Any]) -> None:
        folder = self._dir(collection)
        tmp = folder / (LAYOUT_FILE + ".tmp")
        tmp.write_text(json.dumps(description, indent=1))
        os.replace(tmp, folder / LAYOUT_FILE)
        self._layouts[collection] = description

    def add_vector(self, collection: str, name: str, size: int, distance: str) -> None:
        shard = self._shard(collection)
        _apply(shard, qe.UpdateOperation.create_dense_vector(name, size, _DISTANCES[distance]))
        shard.flush()
        description = dict(self._layouts[collection])
        description["vectors"] = {**description["vectors"], name: [size, distance]}
        self._write_layout(collection, description)

    def drop_vector(self, collection: str, name: str) -> None:
        shard = self._shard(collection)
        _apply(shard, qe.UpdateOperation.delete_vector_name(name))
        shard.flush()
        description = dict(self._layouts[collection])
        description["vectors"] = {k: v for k, v in description["vectors"].items() if k != name}
        self._write_layout(collection, description)

    def vector_params(self, collection: str) -> dict[str, tuple[int, str]]:
        self._shard(collection)
        vectors = self._layouts[collection]["vectors"]
        return {name: (int(size), str(dist)) for name, (size, dist) in vectors.items()}

    # -- points --------------------------------------------------------------------------------

    def retrieve(
        self,
        collection: str,
        ids: PointIds,
        *,
        with_payload: WithPayload,
        with_vectors: WithVectors,
    ) -> list[qm.Record]:
        if not ids:
            return []
        records = self._shard(collection).retrieve(
            tr.ids(ids), tr.with_payload(_selector(with_payload)), tr.with_vector(with_vectors)
        )
        return [_record(r, self._layouts[collection]) for r in records]

    def upsert(self, collection: str, points: Sequence[qm.PointStruct]) -> None:
        if not points:
            return
        edge_points = [
            qe.Point(
                tr.point_id(p.id),
                cast("dict[str, qe.NamedVector]", _vectors_in(p.vector)),
                p.payload or {},
            )
            for p in points
        ]
        self._update(collection, qe.UpdateOperation.upsert_points(edge_points))

    def update_vectors(
        self, collection: str, vectors: Mapping[str, Mapping[str, list[float]]]
    ) -> None:
        if vectors:
            points = [
                qe.PointVectors(tr.point_id(pid), cast("qe.Vector", _vectors_in(named)))
                for pid, named in vectors.items()
            ]
            self._update(collection, qe.UpdateOperation.update_vectors(points))

    def set_payload(self, collection: str, payload: Mapping[str, Any], ids: PointIds) -> None:
        if ids:
            op = qe.UpdateOperation.set_payload(tr.ids(ids), dict(payload))
            self._update(collection, op)

    def set_payloads(self, collection: str, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        for pid, fields in payloads.items():
            self._update(
                collection, qe.UpdateOperation.set_payload([tr.point_id(pid)], dict(fields))
            )

    def delete(self, collection: str, ids: PointIds) -> None:
        if ids:
            self._update(collection, qe.UpdateOperation.delete_points(tr.ids(ids)))

    def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: str | int | None = None,
        query_filter: qm.Filter | None = None,
        with_payload: WithPayload = True,
        with_vectors: WithVectors = False,
    ) -> tuple[list[qm.Record], str | int | None]:
        request = qe.ScrollRequest(
            offset=None if offset is None else tr.point_id(offset),
            limit=limit,
            filter=tr.filter_(query_filter),
            with_payload=tr.with_payload(_selector(with_payload)),
            with_vector=tr.with_vector(with_vectors),
        )
        records, next_id = self._shard(collection).scroll(request)
        return [_record(r, self._layouts[collection]) for r in records], _id_out(next_id)

    def count(self, collection: str, query_filter: qm.Filter | None = None) -> int:
        request = qe.CountRequest(exact=True, filter=tr.filter_(query_filter))
        return int(self._shard(collection).count(request))

    def query(self, collection: str, request: qm.QueryRequest) -> list[qm.ScoredPoint]:
        """One Query API request. As on a server, points a query names instead of giving a vector
        (``{"nearest": "<id>"}``, recommend examples) are left out of the results."""
        shard = self._shard(collection)
        named: list[qm.ExtendedPointId] = []
        looked_up: dict[tuple[str, str], list[float]] = {}  # the second translation reuses them

        def vector_of(pid: qm.ExtendedPointId, using: str | None) -> list[float]:
            name = using or ""
            if (str(pid), name) in looked_up:
                return looked_up[str(pid), name]
            found = shard.retrieve([tr.point_id(pid)], False, [name] if name else True)
            vectors = found[0].vector if found else None
            vec = vectors.get(name) if isinstance(vectors, Mapping) else vectors
            if not isinstance(vec, list) or not all(isinstance(x, float | int) for x in vec):
                raise UnsupportedRequest(f"point {pid} has no dense vector {name!r} to query with")
            named.append(pid)
            looked_up[str(pid), name] = [float(x) for x in vec]  # type: ignore[arg-type]
            return looked_up[str(pid), name]

        translated = tr.query_request(request, vector_of)
        if named:
            translated = tr.query_request(_excluding(request, named), vector_of)
        try:
            points = shard.query(translated)
        except Exception as exc:  # the engine raises bare Exceptions with its reason
            raise EngineError(_first_line(exc)) from exc
        return [_scored(p, self._layouts[collection]) for p in points]

    def info(self, collection: str) -> qm.CollectionInfo:
        shard = self._shard(collection)
        described = self._layouts[collection]
        stats = shard.info()
        layout = described.get("layout", {})
        vectors = {
            name: qm.VectorParams(
                size=int(size),
                distance=qm.Distance(dist),
                on_disk=layout.get("storage") in ("disk", "int8"),
                hnsw_config=None if layout.get("searched") else qm.HnswConfigDiff(m=0),
            )
            for name, (size, dist) in described["vectors"].items()
        }
        schema = {
            field: qm.PayloadIndexInfo(
                data_type=qm.PayloadSchemaType(str(kind)), points=0, params=None
            )
            for field, kind in layout.get("payload_indexes", {}).items()
        }
        return collection_info(
            vectors,
            points=stats.points_count,
            indexed=stats.indexed_vectors_count,
            segments=stats.segments_count,
            payload_schema=schema,
            on_disk_payload=bool(layout.get("payload_on_disk", True)),
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def _update(self, collection: str, operation: qe.UpdateOperation) -> None:
        _apply(self._shard(collection), operation)
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def optimize(self, collections: Sequence[str] | None = None) -> bool:
        """Build the HNSW index of what was written since, merge small segments and drop the old
        versions of rewritten points — now, blocking. The embedded engine has no background
        optimizer: without this an items collection is searched by brute force. Returns whether
        anything was done."""
        done = False
        for collection in collections if collections is not None else self._known():
            if self.collection_exists(collection):
                done = self._shard(collection).optimize() or done
        return done

    def _known(self) -> list[str]:
        return [p.name for p in self.path.iterdir() if (p / LAYOUT_FILE).is_file()]

    def flush(self) -> None:
        for shard in self._shards.values():
            shard.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close every shard, then release the folder."""
        shards, self._shards = self._shards, {}
        try:
            for shard in shards.values():
                shard.flush()
                shard.close()
        finally:
            if self._lock is not None:
                with contextlib.suppress(OSError):
                    fcntl.flock(self._lock, fcntl.LOCK_UN)
                os.close(self._lock)
                self._lock = None

    def __del__(self) -> None:  # a forgotten close must not keep the folder locked
        if getattr(self, "_lock", None) is not None:
            with contextlib.suppress(Exception):
                self.close()


def edge_config(layout: CollectionLayout) -> qe.EdgeConfig:
    """The shard configuration of a collection layout (see :class:`CollectionLayout`)."""
    if layout.searched:
        hnsw = qe.HnswIndexConfig(
            m=layout.hnsw_m, ef_construct=layout.hnsw_ef_construct, full_scan_threshold=10_000
        )
    else:  # read by id only: no graph at all
        hnsw = qe.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000)
    quantization = None
    if layout.storage == "int8":
        quantization = qe.ScalarQuantizationConfig(
            qe.ScalarType.Int8, quantile=0.99, memory=qe.Memory.Cached
        )
    memory = qe.Memory.Cached if layout.storage == "ram" else qe.Memory.Cold
    params = qe.EdgeVectorParams(
        size=layout.dimension,
        distance=qe.Distance.Cosine,
        memory=memory,
        quantization_config=quantization,
        hnsw_config=hnsw,
    )
    extra = {
        name: qe.EdgeVectorParams(
            size=size, distance=_DISTANCES[dist], memory=memory, hnsw_config=hnsw
        )
        for name, (size, dist) in layout.extra_vectors.items()
    }
    return qe.EdgeConfig(
        vectors={**{name: params for name in layout.vector_names}, **extra},
        hnsw_config=hnsw,
        payload_memory=qe.Memory.Cold if layout.payload_on_disk else qe.Memory.Cached,
        wal_enabled=True,
    )


def collection_info(
    vectors: dict[str, qm.VectorParams],
    *,
    points: int,
    indexed: int,
    segments: int,
    payload_schema: dict[str, qm.PayloadIndexInfo],
    on_disk_payload: bool,
) -> qm.CollectionInfo:
    """A ``CollectionInfo`` as a server would answer for a one-shard collection."""
    return qm.CollectionInfo(
        status=qm.CollectionStatus.GREEN,
        optimizer_status=qm.OptimizersStatusOneOf.OK,
        indexed_vectors_count=indexed,
        points_count=points,
        segments_count=segments,
        config=qm.CollectionConfig(
            params=qm.CollectionParams(
                vectors=vectors, shard_number=1, on_disk_payload=on_disk_payload
            ),
            hnsw_config=qm.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
            optimizer_config=qm.OptimizersConfig(
                deleted_threshold=0.2,
                vacuum_min_vector_number=1000,
                default_segment_number=0,
                flush_interval_sec=5,
            ),
            wal_config=qm.WalConfig(wal_capacity_mb=32, wal_segments_ahead=0),
        ),
        payload_schema=payload_schema,
    )


def _take_lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLockedError(
            f"embedded Qdrant folder {path.parent} is in use by another process (one process at "
            "a time); go through the running service, stop it, or set INTEREST_QDRANT_URL"
        ) from None
    return fd


def _excluding(request: qm.QueryRequest, ids: list[qm.ExtendedPointId]) -> qm.QueryRequest:
    """``request`` with ``ids`` excluded by its top-level filter (which applies to prefetches)."""
    exclude = qm.HasIdCondition(has_id=list(dict.fromkeys(ids)))
    base = request.filter
    if base is None:
        merged = qm.Filter(must_not=[exclude])
    else:
        must_not = (
            base.must_not
            if isinstance(base.must_not, list)
            else [base.must_not]
            if base.must_not
            else []
        )
        merged = base.model_copy(update={"must_not": [*must_not, exclude]})
    return request.model_copy(update={"filter": merged})


def _apply(shard: qe.EdgeShard, operation: qe.UpdateOperation) -> None:
    """One update; the engine's refusal (a bare Exception) becomes an ``EngineError``."""
    try:
        shard.update(operation)
    except Exception as exc:
        raise EngineError(_first_line(exc)) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _selector(w: WithPayload) -> Any:
    return w if isinstance(w, bool) else list(w)


def _id_out(raw: Any) -> str | int | None:
    if raw is None:
        return None
    return raw if isinstance(raw, int) else str(raw)


def _vectors_in(raw: Any) -> dict[str, list[float]]:
    """A point's vectors for the engine: named dense vectors only (the store has no others)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise UnsupportedRequest("points must carry named vectors here")
    # Lists of Python floats (the store's own validated vectors) go as they are.
    return {str(k): v if isinstance(v, list) else [float(x) for x in v] for k, v in raw.items()}


def _vectors_out(raw: Any, described: Mapping[str, Any]) -> dict[str, qm.VectorOutput] | None:
    """A point's vectors in the collection's vector order: the engine returns them in an order
    that changes from call to call, which would reorder what is planned from them."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        rank = {name: k for k, name in enumerate(described.get("vectors", {}))}
        names = sorted(raw, key=lambda n: (rank.get(str(n), len(rank)), str(n)))
        return {str(k): list(raw[k]) for k in names}
    return {"": list(raw)}


def _id_of(raw: Any) -> str | int:
    out = _id_out(raw)
    if out is None:
        raise EngineError("the engine returned a point without an id")
    return out


def _record(r: Any, described: Mapping[str, Any]) -> qm.Record:
    vector = _vectors_out(r.vector, described)
    return qm.Record(id=_id_of(r.id), payload=r.payload, vector=vector, order_value=None)


def _scored(p: Any, described: Mapping[str, Any]) -> qm.ScoredPoint:
    return qm.ScoredPoint(
        id=_id_of(p.id),
        version=p.version,
        score=p.score,
        payload=p.payload,
        vector=_vectors_out(p.vector, described),
        order_value=p.order_value,
    )
