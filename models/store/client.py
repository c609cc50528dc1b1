"""Server backend: a Qdrant server or cluster through qdrant-client.

Also wraps qdrant-client's local mode (``QdrantClient(":memory:")`` or ``path=``), a pure-Python
stand-in for Qdrant that the congruence tests use as an independent reference for the embedded
engine; it is never the runtime (slow, brute force; see ``../shared/notes/qdrant-edge.md``).

Every write waits for the server (``wait=True``), so a write is durable when it returns, as in
the embedded backend.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client.http import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from models.store.base import (
    CollectionLayout,
    CollectionNotFound,
    EngineError,
    PointIds,
    StoreError,
    StoreUnavailableError,
    WithPayload,
    WithVectors,
)

_INDEX_KINDS = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "integer": qm.PayloadSchemaType.INTEGER,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
}


def _server_reason(exc: UnexpectedResponse) -> str:
    """One line from a Qdrant server's error: its own message when it sent one."""
    try:
        error = json.loads(exc.content)["status"]["error"]
    except (ValueError, KeyError, TypeError):
        error = None
    if isinstance(error, str) and error:
        return error.splitlines()[0]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _unreachable(url: str, exc: ResponseHandlingException) -> StoreUnavailableError:
    """One line for a server that could not be reached, naming the setting that fixes it."""
    cause = exc.source if isinstance(exc.source, BaseException) else exc
    detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return StoreUnavailableError(
            f"Qdrant at {url} is unreachable: its TLS certificate is not trusted ({detail}); "
            "set INTEREST_QDRANT_CA_FILE to the CA that signed it"
        )
    return StoreUnavailableError(f"Qdrant at {url} is unreachable: {detail}")


class _Translated:
    """qdrant-client with its transport errors made the store's: an unreachable server, or
    TLS that fails, is :class:`StoreUnavailableError`; a refused API key an
    :class:`EngineError` that says which setting to check. Each a single line."""

    def __init__(self, client: QdrantClient, url: str) -> None:
        self._client = client
        self._url = url

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except ResponseHandlingException as exc:
                raise _unreachable(self._url, exc) from None
            except UnexpectedResponse as exc:
                if exc.status_code in (401, 403):
                    raise EngineError(
                        f"Qdrant at {self._url} refused the request ({exc.status_code} "
                        f"{exc.reason_phrase}): check INTEREST_QDRANT_API_KEY or _API_KEY_FILE"
                    ) from None
                raise

        return call


def _tls_context(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What httpx verifies a server's certificate with: ``ca_file``, else the system's CAs."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StoreError(f"INTEREST_QDRANT_CA_FILE={ca_file} is unusable: {reason}") from None


def _missing(exc: Exception) -> bool:
    """Whether a qdrant-client error says the collection does not exist."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 404
    return isinstance(exc, ValueError) and "not found" in str(exc)  # local mode's wording


class ClientBackend:
    """Collections on a Qdrant server (or in qdrant-client's local mode, for tests)."""

    def __init__(self, client: QdrantClient, *, local: bool = False, url: str = "") -> None:
        # Typed as the client: the wrapper has its methods, with the store's errors.
        self.client: QdrantClient = client if local else _Translated(client, url)  # type: ignore[assignment]
        self.kind = "local" if local else "server"

    @classmethod
    def connect(
        cls, url: str, api_key: str | None, timeout: int, ca_file: Path | None = None
    ) -> ClientBackend:
        """A server by ``url``, with its API key and, for ``https``, TLS verified against
        ``ca_file`` (default: the system's CAs)."""
        verify = _tls_context(ca_file)
        # No version check at construction: a server that cannot be reached would print a
        # multi-line warning before the one-line error of the first request.
        client = QdrantClient(
            url=url, api_key=api_key, timeout=timeout, verify=verify, check_compatibility=False
        )
        return cls(client, url=url)

    @classmethod
    def local(cls, path: str = ":memory:") -> ClientBackend:
        """qdrant-client's pure-Python local mode: a test reference, never the runtime."""
        client = QdrantClient(":memory:") if path == ":memory:" else QdrantClient(path=path)
        return cls(client, local=True)

    def _call(self, fn: Any, collection: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(collection, *args, **kwargs)
        except (UnexpectedResponse, ValueError) as exc:
            if _missing(exc):
                raise CollectionNotFound(f"Collection {collection} not found") from exc
            if isinstance(exc, UnexpectedResponse) and 400 <= (exc.status_code or 0) < 500:
                raise EngineError(_server_reason(exc)) from exc  # the server refused the request
            raise

    def collection_exists(self, collection: str) -> bool:
        return bool(self.client.collection_exists(collection))

    def create_collection(self, collection: str, layout: CollectionLayout) -> None:
        quantization = None
        if layout.storage == "int8":
            quantization = qm.ScalarQuantization(
                scalar=qm.ScalarQuantizationConfig(
                    type=qm.ScalarType.INT8, quantile=0.99, always_ram=True
                )
            )
        hnsw = (
            qm.HnswConfigDiff(m=layout.hnsw_m, ef_construct=layout.hnsw_ef_construct)
            if layout.searched
            else qm.HnswConfigDiff(m=0)
        )
        params = qm.VectorParams(
            size=layout.dimension,
            distance=qm.Distance.COSINE,
            on_disk=layout.storage != "ram",
            quantization_config=quantization,
            hnsw_config=hnsw,
        )
        extra = {
            name: qm.VectorParams(
                size=size, distance=qm.Distance(dist), on_disk=layout.storage != "ram",
                hnsw_config=hnsw,
            )
            for name, (size, dist) in layout.extra_vectors.items()
        }  # fmt: skip
        self.client.create_collection(
            collection,
            vectors_config={**{name: params for name in layout.vector_names}, **extra},
            on_disk_payload=layout.payload_on_disk,
            hnsw_config=hnsw,
        )
        for field, kind in layout.payload_indexes.items():
            if self.kind == "server":  # local mode has no payload indexes (and warns)
                self.client.create_payload_index(collection, field, field_schema=_INDEX_KINDS[kind])

    def vector_params(self, collection: str) -> dict[str, tuple[int, str]]:
        info = self._call(self.client.get_collection, collection)
        vectors = info.config.params.vectors
        have = vectors if isinstance(vectors, Mapping) else {}
        return {name: (p.size, p.distance.value) for name, p in have.items()}

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
        records: list[qm.Record] = self._call(
            self.client.retrieve,
            collection,
            ids=list(ids),
            with_payload=with_payload if isinstance(with_payload, bool) else list(with_payload),
            with_vectors=with_vectors if isinstance(with_vectors, bool) else list(with_vectors),
        )
        for r in records:
            r.id = str(r.id) if not isinstance(r.id, int) else r.id
        return records

    def upsert(self, collection: str, points: Sequence[qm.PointStruct]) -> None:
        if points:
            self._call(self.client.upsert, collection, points=list(points), wait=True)

    def set_payload(self, collection: str, payload: Mapping[str, Any], ids: PointIds) -> None:
        if ids:
            self._call(
                self.client.set_payload, collection, payload=dict(payload), points=list(ids),
                wait=True,
            )  # fmt: skip

    def set_payloads(self, collection: str, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        """One request setting a different payload on each point (``{point id: fields}``)."""
        if payloads:
            ops = [
                qm.SetPayloadOperation(set_payload=qm.SetPayload(payload=dict(p), points=[pid]))
                for pid, p in payloads.items()
            ]
            self._call(self.client.batch_update_points, collection, update_operations=ops)

    def update_vectors(
        self, collection: str, vectors: Mapping[str, Mapping[str, list[float]]]
    ) -> None:
        if vectors:
            points = [
                qm.PointVectors(id=pid, vector={k: list(v) for k, v in named.items()})
                for pid, named in vectors.items()
            ]
            self._call(self.client.update_vectors, collection, points=points, wait=True)

    def add_vector(self, collection: str, name: str, size: int, distance: str) -> None:
        self._call(
            self.client.create_vector_name, collection, vector_name=name,
            vector_name_config=qm.DenseVectorNameConfig(
                dense=qm.DenseVectorConfig(size=size, distance=qm.Distance(distance))
            ),
        )  # fmt: skip

    def drop_vector(self, collection: str, name: str) -> None:
        self._call(self.client.delete_vector_name, collection, vector_name=name)

    def delete(self, collection: str, ids: PointIds) -> None:
        if ids:
            selector = qm.PointIdsList(points=list(ids))
            self._call(self.client.delete, collection, points_selector=selector, wait=True)

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
        records, next_id = self._call(
            self.client.scroll,
            collection,
            limit=limit,
            offset=offset,
            scroll_filter=query_filter,
            with_payload=with_payload if isinstance(with_payload, bool) else list(with_payload),
            with_vectors=with_vectors if isinstance(with_vectors, bool) else list(with_vectors),
        )
        for r in records:
            r.id = str(r.id) if not isinstance(r.id, int) else r.id
        return records, None if next_id is None else next_id

    def count(self, collection: str, query_filter: qm.Filter | None = None) -> int:
        result = self._call(self.client.count, collection, count_filter=query_filter, exact=True)
        return int(result.count)

    def query(self, collection: str, request: qm.QueryRequest) -> list[qm.ScoredPoint]:
        response = self._call(
            self.client.query_points,
            collection,
            query=request.query,
            using=request.using,
            prefetch=request.prefetch,
            query_filter=request.filter,
            search_params=request.params,
            limit=10 if request.limit is None else request.limit,
            offset=request.offset,
            with_payload=False if request.with_payload is None else request.with_payload,
            with_vectors=False if request.with_vector is None else request.with_vector,
            score_threshold=request.score_threshold,
            lookup_from=request.lookup_from,
        )
        points: list[qm.ScoredPoint] = response.points
        for p in points:
            p.id = str(p.id) if not isinstance(p.id, int) else p.id
        return points

    def info(self, collection: str) -> qm.CollectionInfo:
        info: qm.CollectionInfo = self._call(self.client.get_collection, collection)
        return info

    def flush(self) -> None:
        """Nothing to do: every write waited for the server."""

    def optimize(self, collections: Sequence[str] | None = None) -> bool:
        """Nothing to do: a server's optimizers run in the background."""
        return False

    def close(self) -> None:
        self.client.close()
