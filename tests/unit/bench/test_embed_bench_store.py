"""The embed benchmark's ``--qdrant`` stores: the embedded engine by default, local mode by name.

Each store the benchmark can open takes a fold step of the embed worker (``JobFolder.apply``,
items named by id so no model runs) and releases its folder when closed; the old names of the
local-mode options are refused with a hint instead of silently meaning another engine.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.embed_bench import (
    EMBEDDED,
    LOCAL_MODE,
    LOCAL_MODE_MEMORY,
    close_store,
    open_store,
    parse_args,
    qdrant_choice,
)
from models.profile import InterestSpec
from models.store.edge import EdgeBackend
from streams.contracts.jobs import JobEvent, UpdateJob
from streams.embed.fold import JobFolder

DIM = 8


class _NoModel:
    """Stands in for the encoder: only ``dimension`` is read when every event names an item."""

    dimension = DIM

    def encode(self, texts: Sequence[str]) -> Any:
        raise AssertionError(f"no text should be embedded, got {len(texts)}")


def test_default_is_the_embedded_engine() -> None:
    assert parse_args([]).qdrant == EMBEDDED
    assert qdrant_choice("http://127.0.0.1:6333") == "http://127.0.0.1:6333"
    for old in ("disk", "memory"):
        with pytest.raises(argparse.ArgumentTypeError, match="was local mode"):
            qdrant_choice(old)
    with pytest.raises(argparse.ArgumentTypeError):
        qdrant_choice("edge")


@pytest.mark.parametrize("qdrant", [EMBEDDED, LOCAL_MODE, LOCAL_MODE_MEMORY])
def test_each_store_takes_a_fold_step(qdrant: str, tmp_path: Path) -> None:
    spec = InterestSpec()
    store = open_store(qdrant, tmp_path / "q", _NoModel(), spec)  # type: ignore[arg-type]
    try:
        if qdrant == EMBEDDED:
            assert isinstance(store.backend, EdgeBackend)
        else:
            assert store.backend.kind == "local"
        rng = np.random.default_rng(3)
        store.upsert_items([(f"i{n}", rng.normal(size=DIM), {}) for n in range(4)])
        events = tuple(
            JobEvent(n, f"e{n}", "like", 1.0, 1_750_000_000_000 + n, f"i{n % 4}", None, ())
            for n in range(1, 6)
        )
        folder = JobFolder(store, _NoModel(), spec)  # type: ignore[arg-type]
        report = folder.apply([UpdateJob("u1", events, first_seen_ms=0, emitted_ms=0)], now_ms=0)
        assert report.events_applied == 5 and not report.skipped
        assert store.get_users(["u1"])["u1"].payload["seq"] == 5
    finally:
        close_store(qdrant, store)
    if qdrant == EMBEDDED:  # the folder is released: another open succeeds
        EdgeBackend(tmp_path / "q").close()
