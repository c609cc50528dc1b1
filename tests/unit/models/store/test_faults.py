"""Fault injection in the store: off by default, an outage exactly while the fault file exists,
and nothing written during one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.settings import QdrantSettings
from models.store import InterestStore
from models.store.base import EngineError, StoreError, StoreUnavailableError
from models.store.edge import EdgeBackend
from models.store.faults import FaultInjectingBackend

DIM = 8
NAMES = ("short_term", "long_term")


def vec(i: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[i % DIM] = 1.0
    return v


def test_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTEREST_QDRANT_FAULT_FILE", raising=False)
    settings = QdrantSettings(path=tmp_path / "q", url=None)
    assert settings.fault_file is None
    with InterestStore.from_settings(settings, DIM) as store:
        assert isinstance(store.backend, EdgeBackend)


def test_outage_while_the_file_exists_then_the_same_write_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fault = tmp_path / "store-down"
    monkeypatch.setenv("INTEREST_QDRANT_FAULT_FILE", str(fault))
    settings = QdrantSettings(path=tmp_path / "q", url=None)
    assert settings.fault_file == fault
    with InterestStore.from_settings(settings, DIM) as store:
        backend = store.backend
        assert isinstance(backend, FaultInjectingBackend) and backend.kind == "embedded"
        store.ensure_collections(DIM, NAMES)
        write = [("alice", {"short_term": vec(1)}, {"user_id": "alice", "seq": 1})]
        store.upsert_users(write)

        fault.touch()
        with pytest.raises(StoreUnavailableError, match="store unavailable") as info:
            store.upsert_users([("bob", {"short_term": vec(2)}, {"user_id": "bob", "seq": 1})])
        assert isinstance(info.value, EngineError) and isinstance(info.value, StoreError)
        with pytest.raises(StoreUnavailableError):
            store.get_users(["alice"])
        with pytest.raises(StoreUnavailableError):
            store.flush()
        assert backend.refused == 3

        fault.unlink()
        got = store.get_users(["alice", "bob"])
        assert set(got) == {"alice"}  # bob's write during the outage never reached the engine
        assert got["alice"].payload["seq"] == 1
        np.testing.assert_allclose(got["alice"].vectors["short_term"], vec(1))
        store.upsert_users([("bob", {"short_term": vec(2)}, {"user_id": "bob", "seq": 1})])
        assert set(store.get_users(["alice", "bob"])) == {"alice", "bob"}
        fault.touch()  # the store closes during an outage

    # close() went through all the same: the folder's lock is free again.
    fault.unlink()
    with InterestStore.from_settings(QdrantSettings(path=tmp_path / "q", url=None), DIM) as s2:
        assert s2.get_users(["bob"])["bob"].payload["seq"] == 1
