"""The Qdrant store: one interface (:class:`InterestStore` over a :class:`StoreBackend`), two
engines — Qdrant's own engine embedded in this process (default) or a Qdrant server by URL.

See :mod:`models.store.base` for the shared pieces, :mod:`models.store.edge` and
:mod:`models.store.client` for the two backends, :mod:`models.store.interest_store` for what
users and items look like in it.
"""

from __future__ import annotations

from models.store.base import (
    ITEM_VECTOR,
    LIVE_ITEM_FIELDS,
    LIVE_ITEM_VECTORS,
    POINT_NAMESPACE,
    POPULARITY_FIELD,
    CollectionLayout,
    CollectionNotFound,
    EngineError,
    Float32Array,
    LegacyStoreError,
    StoreBackend,
    StoredUser,
    StoreError,
    StoreLockedError,
    StoreSchemaError,
    UnsupportedRequest,
    item_point_id,
    user_point_id,
)
from models.store.interest_store import (
    InterestStore,
    ItemWrite,
    UserWrite,
    VectorLike,
    named_vectors,
    open_backend,
)

__all__ = [
    "ITEM_VECTOR",
    "LIVE_ITEM_FIELDS",
    "LIVE_ITEM_VECTORS",
    "POINT_NAMESPACE",
    "POPULARITY_FIELD",
    "CollectionLayout",
    "CollectionNotFound",
    "EngineError",
    "Float32Array",
    "InterestStore",
    "ItemWrite",
    "LegacyStoreError",
    "StoreBackend",
    "StoreError",
    "StoreLockedError",
    "StoreSchemaError",
    "StoredUser",
    "UnsupportedRequest",
    "UserWrite",
    "VectorLike",
    "item_point_id",
    "named_vectors",
    "open_backend",
    "user_point_id",
]
