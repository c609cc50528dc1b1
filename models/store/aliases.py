"""Collection aliases on a Qdrant server: which generation readers see (``rebuild switch``).

A server's readers (``recommend``, ``profile``, other programs with qdrant-client) name the base
collections, ``users`` and ``items``; once a rebuilt generation serves, those names are aliases
of ``users_gN``/``items_gN`` and one ``update_collection_aliases`` call (atomic on the server:
every reader sees either the old pair or the new one) moves both. Generation 0 is real
collections under those very names, and an alias cannot share a collection's name, so the first
switch away from it must delete them (the caller asks for that explicitly; see
:func:`switch_aliases`). The embedded store has no aliases: it switches by a pointer file
(:mod:`streams.generation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qdrant_client import QdrantClient
from qdrant_client.http import models as qm

from models.store.base import StoreBackend, StoreError


class AliasError(StoreError):
    """An alias operation that cannot be done; the message is one line."""


def _client(backend: StoreBackend) -> QdrantClient:
    client = getattr(backend, "client", None)
    if not isinstance(client, QdrantClient):
        raise AliasError(f"the {backend.kind} store has no collection aliases")
    return client


def alias_targets(backend: StoreBackend) -> dict[str, str]:
    """``{alias: collection}`` of every alias on the server."""
    client = _client(backend)
    response = client.get_aliases()
    return {a.alias_name: a.collection_name for a in response.aliases}


def switch_aliases(
    backend: StoreBackend, targets: Mapping[str, str], *, drop_collections: Sequence[str] = ()
) -> None:
    """Point each alias of ``targets`` at its collection in one atomic request.

    ``drop_collections`` are real collections that carry alias names (generation 0's ``users``
    and ``items``): they are deleted first, so between that and the alias request (one round
    trip) those names do not resolve. A target that does not exist is refused before anything
    changes.
    """
    client = _client(backend)
    for collection in targets.values():
        if not backend.collection_exists(collection):
            raise AliasError(f"collection {collection} does not exist")
    for name in drop_collections:
        client.delete_collection(name)
    current = alias_targets(backend)
    actions: list[qm.DeleteAliasOperation | qm.CreateAliasOperation] = [
        qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))
        for alias in targets
        if alias in current
    ]
    actions += [
        qm.CreateAliasOperation(
            create_alias=qm.CreateAlias(collection_name=collection, alias_name=alias)
        )
        for alias, collection in targets.items()
    ]
    client.update_collection_aliases(change_aliases_operations=actions)


def collection_names(backend: StoreBackend) -> list[str]:
    """Every real collection on the server."""
    client = _client(backend)
    return [c.name for c in client.get_collections().collections]
