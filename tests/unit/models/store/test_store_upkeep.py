"""The embedded store's upkeep: the WAL stays bounded, items get their index, search settings
reach the stages that search. What a user would notice as a growing disk, brute-force
recommendations, or a setting that does nothing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from conftest import EdgeStoreFactory
from qdrant_client.http import models as qm

from models.store import InterestStore
from models.store.edge import EdgeBackend
from models.store.interest_store import with_search_params

DIM = 384
VECTORS = tuple(f"interest_{k}" for k in range(8))


def _wal_bytes(path: Path) -> int:
    """Bytes the WAL occupies on disk (its files are preallocated: their length says little)."""
    files = [f for f in path.rglob("*") if f.is_file() and "wal" in f.parts]
    return sum(f.stat().st_blocks * 512 for f in files)


def _rewrite_users(store: InterestStore, rounds: int, users: int = 600) -> None:
    rng = np.random.default_rng(1)
    vec = {name: rng.standard_normal(DIM) for name in VECTORS}
    for r in range(rounds):
        for start in range(0, users, 100):
            batch = [(f"u{i}", vec, {"seq": r}) for i in range(start, start + 100)]
            store.upsert_users(batch)


def test_periodic_flushes_keep_the_wal_from_growing_with_every_rewrite(tmp_path: Path) -> None:
    never = InterestStore(EdgeBackend(tmp_path / "never", flush_interval_s=1e9), dimension=DIM)
    often = InterestStore(EdgeBackend(tmp_path / "often", flush_interval_s=0.0), dimension=DIM)
    for store in (never, often):
        store.ensure_collections(DIM, list(VECTORS))
        _rewrite_users(store, rounds=22)  # ~160 MB of writes: past two WAL segments
    grown, bounded = _wal_bytes(tmp_path / "never"), _wal_bytes(tmp_path / "often")
    never.close()
    often.close()
    assert bounded < 0.7 * grown, (bounded, grown)


def test_flush_interval_is_time_based(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock the test moves: how long the writes take on a busy machine must not matter.
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    backend = EdgeBackend(tmp_path / "q", flush_interval_s=5.0)
    store = InterestStore(backend, dimension=DIM)
    store.ensure_collections(DIM, list(VECTORS))
    before = backend._last_flush
    now[0] += 4.9
    _rewrite_users(store, rounds=1, users=100)
    assert backend._last_flush == before  # within the interval: WAL only
    now[0] += 0.2
    _rewrite_users(store, rounds=1, users=100)
    assert backend._last_flush == now[0]
    store.close()


def test_loading_items_builds_their_index(edge_store: EdgeStoreFactory) -> None:
    """Enough items to pass the engine's indexing threshold (10 MB of vectors): the store's
    optimize builds HNSW over them; without it every search is a full scan."""
    store = edge_store(DIM)
    store.ensure_collections(DIM, list(VECTORS))
    rng = np.random.default_rng(2)
    store.upsert_items([(f"i{i}", rng.standard_normal(DIM), {}) for i in range(7000)])
    assert store.backend.info(store.items_collection).indexed_vectors_count == 0
    assert store.optimize(users=False) is True
    assert store.backend.info(store.items_collection).indexed_vectors_count == 7000
    assert store.optimize(users=False) is False  # nothing left to do: cheap to call often


def test_search_settings_reach_every_prefetch() -> None:
    inner = qm.Prefetch(query=[1.0, 0.0], using="content", limit=5)
    outer = qm.Prefetch(prefetch=[inner], query=[0.0, 1.0], using="content", limit=5)
    request = qm.QueryRequest(prefetch=[outer], query=qm.FormulaQuery(formula="$score"))
    params = qm.SearchParams(hnsw_ef=256)
    tuned = with_search_params(request, params)
    assert tuned.params == params
    [top] = tuned.prefetch  # type: ignore[misc]
    assert top.params == params
    assert top.prefetch[0].params == params  # type: ignore[index]
    own = qm.SearchParams(exact=True)
    kept = with_search_params(request.model_copy(update={"params": own}), params)
    assert kept.params == own  # a stage that chose its own parameters keeps them


def test_int8_items_are_searched_with_rescoring(edge_store: EdgeStoreFactory) -> None:
    store = edge_store(DIM, items_storage="int8", search_hnsw_ef=128)
    params = store.search_params()
    assert params is not None and params.hnsw_ef == 128
    assert params.quantization is not None and params.quantization.rescore is True
    assert edge_store(DIM, folder="plain").search_params() is None
