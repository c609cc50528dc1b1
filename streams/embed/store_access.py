"""How a short-lived command reaches the store: directly, or through the running service.

Embedded Qdrant admits one process. If the folder is free, the command opens it itself; if a
running ``interest-stream run``/``embed`` holds it, the command asks that process's HTTP API
(:mod:`streams.embed.api`) instead — a user never sees a lock error for running ``recommend`` next
to
``run``. With a Qdrant server (``INTEREST_QDRANT_URL``) commands always go to Qdrant directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from models.settings import ModelSettings, QdrantSettings
from models.store import InterestStore, StoreLockedError
from models.user_view import describe_user
from streams.embed.api import ApiClient, ApiUnavailable, model_info
from streams.settings import ApiSettings


class StoreAccess:
    """``profile``, ``recommend`` and ``items load`` wherever the store is reachable."""

    def __init__(self, qdrant: QdrantSettings, api: ApiSettings) -> None:
        self.qdrant = qdrant
        self.api = ApiClient(api)
        self.api_settings = api

    @contextmanager
    def _direct(self, dimension: int | None = None) -> Iterator[InterestStore | None]:
        """The store opened here, or None when the running service holds it."""
        try:
            store = InterestStore.from_settings(self.qdrant, dimension)
        except StoreLockedError:
            if self.qdrant.url:
                raise
            yield None
            return
        try:
            yield store
        finally:
            store.close()

    def _locked_api(self) -> ApiClient:
        try:
            self.api.health()
        except ApiUnavailable as exc:
            raise ApiUnavailable(
                f"the embedded store {self.qdrant.path} is held by another process and {exc}; "
                "is `interest-stream run` running with another INTEREST_API_PORT?"
            ) from None
        return self.api

    def profile(self, user_id: str, with_vectors: bool = False) -> dict[str, Any]:
        with self._direct() as store:
            if store is None:
                return self._locked_api().profile(user_id, with_vectors)
            stored = store.get_users([user_id]).get(user_id)
            view = describe_user(user_id, stored, with_vectors=with_vectors)
            return {**view, "model": model_info(ModelSettings().name)}

    def recommend(
        self,
        user_id: str,
        options: dict[str, Any],
        query: list[tuple[str, str]],
        direct: Callable[[InterestStore, str, dict[str, Any]], dict[str, Any]],
    ) -> dict[str, Any]:
        """``direct(store, user_id, options)`` here, or the API with the same ``query``."""
        with self._direct() as store:
            if store is None:
                return self._locked_api().recommend(user_id, query)
            return direct(store, user_id, options)

    def load_items(
        self, body: bytes, source: str, progress: Callable[[int], None] | None = None
    ) -> int:
        from models.catalog import load_items, read_items
        from models.encoder import Encoder
        from models.settings import ProfileSettings

        catalog = list(read_items(body.splitlines(), source))  # validate before anything else
        encoder = Encoder.from_settings(ModelSettings())
        with self._direct() as store:
            if store is None:
                return self._locked_api().load_items(body, model=encoder.model_name)
            encoder.load()
            store.ensure_collections(encoder.dimension, ProfileSettings().spec().vector_names())
            return load_items(catalog, encoder, store, progress=progress)
