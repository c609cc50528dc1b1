"""Fault injection for the store: a backend that is "unavailable" while a named file exists.

Off by default. ``INTEREST_QDRANT_FAULT_FILE`` (``QdrantSettings.fault_file``) names a file;
:func:`models.store.interest_store.open_backend` then wraps the real backend in
:class:`FaultInjectingBackend`, and while that file exists every request raises
:class:`StoreUnavailableError` before it reaches the engine, as a Qdrant server that refuses
connections would make a request fail. Removing the file ends the outage. Why a file: the chaos
run (``bench/chaos``) takes the store away from a *separate* embed-worker process for a while
without restarting it, and a file is the one switch both processes see at once; the embedded
engine has no server to stop.

Releasing the backend (``close``) always goes through, so a worker asked to stop during an
outage still lets go of the embedded folder's lock; everything else, ``flush`` included, fails.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qdrant_client.http import models as qm

from models.store.base import (
    CollectionLayout,
    PointIds,
    StoreBackend,
    StoreUnavailableError,
    WithPayload,
    WithVectors,
)


class FaultInjectingBackend:
    """A :class:`~models.store.base.StoreBackend` that fails every request while
    ``fault_file`` exists and passes it to ``inner`` otherwise."""

    def __init__(self, inner: StoreBackend, fault_file: Path) -> None:
        self.inner = inner
        self.fault_file = Path(fault_file)
        self.kind = inner.kind
        self.refused = 0
        """Requests refused so far (for tests and logs)."""

    def _check(self, operation: str) -> StoreBackend:
        """The inner backend, or :class:`StoreUnavailableError` during an outage."""
        if self.fault_file.exists():
            self.refused += 1
            raise StoreUnavailableError(
                f"store unavailable ({operation}): fault file {self.fault_file} exists"
            )
        return self.inner

    def collection_exists(self, collection: str) -> bool:
        return self._check("collection_exists").collection_exists(collection)

    def create_collection(self, collection: str, layout: CollectionLayout) -> None:
        self._check("create_collection").create_collection(collection, layout)

    def vector_params(self, collection: str) -> dict[str, tuple[int, str]]:
        return self._check("vector_params").vector_params(collection)

    def retrieve(
        self,
        collection: str,
        ids: PointIds,
        *,
        with_payload: WithPayload,
        with_vectors: WithVectors,
    ) -> list[qm.Record]:
        return self._check("retrieve").retrieve(
            collection, ids, with_payload=with_payload, with_vectors=with_vectors
        )

    def upsert(self, collection: str, points: Sequence[qm.PointStruct]) -> None:
        self._check("upsert").upsert(collection, points)

    def set_payload(self, collection: str, payload: Mapping[str, Any], ids: PointIds) -> None:
        self._check("set_payload").set_payload(collection, payload, ids)

    def set_payloads(self, collection: str, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        self._check("set_payloads").set_payloads(collection, payloads)

    def delete(self, collection: str, ids: PointIds) -> None:
        self._check("delete").delete(collection, ids)

    def update_vectors(
        self, collection: str, vectors: Mapping[str, Mapping[str, list[float]]]
    ) -> None:
        self._check("update_vectors").update_vectors(collection, vectors)

    def add_vector(self, collection: str, name: str, size: int, distance: str) -> None:
        self._check("add_vector").add_vector(collection, name, size, distance)

    def drop_vector(self, collection: str, name: str) -> None:
        self._check("drop_vector").drop_vector(collection, name)

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
        return self._check("scroll").scroll(
            collection, limit=limit, offset=offset, query_filter=query_filter,
            with_payload=with_payload, with_vectors=with_vectors,
        )  # fmt: skip

    def count(self, collection: str, query_filter: qm.Filter | None = None) -> int:
        return self._check("count").count(collection, query_filter)

    def query(self, collection: str, request: qm.QueryRequest) -> list[qm.ScoredPoint]:
        return self._check("query").query(collection, request)

    def info(self, collection: str) -> qm.CollectionInfo:
        return self._check("info").info(collection)

    def flush(self) -> None:
        self._check("flush").flush()

    def optimize(self, collections: Sequence[str] | None = None) -> bool:
        return self._check("optimize").optimize(collections)

    def close(self) -> None:
        self.inner.close()
