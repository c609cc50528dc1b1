"""K online interest clusters ("interest_0" … "interest_{K-1}") with weights and readable labels.

Each slot is a decayed weighted sum (see :mod:`models.interests`) of the positive events assigned to
it, plus decayed tag weights. Per positive event, deterministically (ties go to the lower index):

1. the open slot whose centroid has the highest cosine with the event takes it, if ≥ ``threshold``;
2. else the lowest free slot opens with it;
3. else a slot whose decayed mass share fell below ``recycle_share`` (an interest the user has left
   behind) is replaced by it;
4. else the two most similar slots merge (M, S, counts and tags summed) into the lower index and the
   event opens the freed one.

A slot's weight is its share of the decayed mass of all slots. Because every slot uses the same
half-life the shares do not depend on the clock, only on the events. A slot's label is its heaviest
tag not taken yet; else the nearest name in an optional :class:`LabelVocabulary`; else its
heaviest tag numbered (``football (2)``: two football interests apart); else ``interest <k>``.
Labels are handed out heaviest slot first and never repeat within a profile. The fold gives an
event that names no tags its catalog item's tags, and an untagged text (a search) the phrase of
its salient words (:func:`salient_phrase`) as its one tag, so ``interest <k>`` is a last resort.

Unlike the dimension means, clustering depends on event order (it is online); the caller applies
events in per-user event order, so the same events give the same slots however jobs are cut.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypedDict

import numpy as np

from models.interests import (
    DAY_S,
    DecayedSum,
    Float32Array,
    FloatArray,
    Observation,
    StateError,
    as_unit,
)

#: Default assignment threshold (cosine). For all-MiniLM-L6-v2, related texts score 0.4–0.7 with
#: each other and unrelated ones 0.0–0.25; a centroid of several related texts scores higher than
#: any single one. 0.45 sits in the gap, leaning towards joining an existing interest.
DEFAULT_THRESHOLD: Final = 0.45
VECTOR_PREFIX: Final = "interest_"
PROFILE_DECIMALS: Final = 4


#: Words that carry no topic: left out of :func:`salient_phrase`. English, like the bundled model.
_STOPWORD_TEXT: Final = """
    a about above after again all am an and any are as at be been before being below between
    both but by can could did do does doing down during each few for from further had has have
    having he her here hers him his how i if in into is it its itself just me more most my no nor
    not now of off on once only or other our ours out over own same she should so some such than
    that the their them then there these they this those through to too under until up very was
    we were what when where which while who whom why will with would you your best good new get
    vs using use find show tell want need like"""
STOPWORDS: Final = frozenset(_STOPWORD_TEXT.split())
SALIENT_WORDS: Final = 3
_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")


def salient_phrase(text: str | None, words: int = SALIENT_WORDS) -> str | None:
    """A readable label for an untagged text: its first ``words`` distinct non-stopwords,
    lower-cased, in text order (None when nothing is left).

    >>> salient_phrase("How do GANs generate images of faces?")
    'gans generate images'
    >>> salient_phrase("the of and") is None
    True
    """
    if not text:
        return None
    kept: list[str] = []
    for match in _WORD.finditer(text.casefold()):
        word = match.group()
        if word not in STOPWORDS and not word.isdigit() and word not in kept:
            kept.append(word)
            if len(kept) == words:
                break
    return " ".join(kept) or None


class ProfileEntry(TypedDict):
    """One line of the readable profile."""

    label: str
    weight: float


def slot_vector_name(index: int) -> str:
    """The Qdrant named vector of slot ``index``: ``interest_<index>``."""
    return f"{VECTOR_PREFIX}{index}"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """How many interest slots, how fast they fade, when an event joins one, how many tags kept."""

    k: int = 4
    half_life_s: float = 7 * DAY_S
    threshold: float = DEFAULT_THRESHOLD
    max_tags_per_cluster: int = 16
    recycle_share: float = 0.01

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be ≥ 1, got {self.k}")
        if not self.half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s!r}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine in [-1, 1], got {self.threshold!r}")
        if self.max_tags_per_cluster < 0:
            raise ValueError("max_tags_per_cluster must be ≥ 0")
        if not 0.0 <= self.recycle_share < 1.0:
            raise ValueError(f"recycle_share must be in [0, 1), got {self.recycle_share!r}")


@dataclass(frozen=True, slots=True, eq=False)
class LabelVocabulary:
    """Candidate labels for tagless slots: names and their embeddings (same model as events)."""

    names: tuple[str, ...]
    vectors: FloatArray  # (len(names), model dim), rows normalised on construction

    def __post_init__(self) -> None:
        names = tuple(self.names)
        mat = np.array(self.vectors, dtype=np.float64)
        if mat.ndim != 2 or mat.shape[0] != len(names):
            raise ValueError(f"need one vector row per name: {len(names)} names, {mat.shape}")
        pairs = zip(names, mat, strict=True)
        rows = [as_unit(row, what=f"vocabulary vector {n!r}") for n, row in pairs]
        mat = np.stack(rows) if rows else mat
        mat.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "vectors", mat)

    @classmethod
    def from_mapping(cls, labels: Mapping[str, Any]) -> LabelVocabulary:
        """From ``{name: vector}`` (insertion order breaks ties)."""
        names = tuple(labels)
        if not names:
            return cls((), np.zeros((0, 1)))
        return cls(names, np.stack([np.asarray(v, dtype=np.float64) for v in labels.values()]))

    def nearest(self, direction: FloatArray, exclude: Iterable[str] = ()) -> str | None:
        """The name most cosine-similar to ``direction`` not in ``exclude`` (None if none left)."""
        if not self.names or self.vectors.shape[1] != direction.shape[0]:
            return None
        skip = set(exclude)
        sims = self.vectors @ direction
        best: str | None = None
        best_sim = -math.inf
        for name, sim in zip(self.names, sims.tolist(), strict=True):
            if name not in skip and sim > best_sim:
                best, best_sim = name, sim
        return best


class ClusterSlot(DecayedSum):
    """One interest: a decayed sum of event vectors plus decayed tag weights (top-N kept)."""

    __slots__ = ("max_tags", "tags")

    def __init__(self, half_life_s: float, max_tags: int) -> None:
        super().__init__(half_life_s)
        self.max_tags = max_tags
        self.tags: dict[str, float] = {}

    def _rescaled(self, factor: float) -> None:
        self.tags = {t: w * factor for t, w in self.tags.items()}

    def _trim(self) -> None:
        ranked = sorted(((t, w) for t, w in self.tags.items() if w > 0), key=_tag_rank)
        self.tags = dict(ranked[: self.max_tags])

    def add_event(self, obs: Observation) -> None:
        eff = self.add(obs.vector, obs.weight, obs.ts_ms)
        for tag in dict.fromkeys(obs.tags):
            if tag:
                self.tags[tag] = self.tags.get(tag, 0.0) + eff
        self._trim()

    def merge_slot(self, other: ClusterSlot) -> None:
        factor = self.merge(other)
        for tag, w in other.tags.items():
            self.tags[tag] = self.tags.get(tag, 0.0) + w * factor
        self._trim()

    def ranked_tags(self) -> list[tuple[str, float]]:
        """Tags heaviest first (ties by name)."""
        return sorted(self.tags.items(), key=_tag_rank)

    def cosine(self, unit_vector: FloatArray) -> float:
        """Cosine between the centroid and a unit vector (0.0 when there is no direction)."""
        direction = self.get()
        return 0.0 if direction is None else float(direction @ unit_vector)


def _tag_rank(item: tuple[str, float]) -> tuple[float, str]:
    return (-item[1], item[0])


class InterestClusters:
    """The K interest slots of one user; ``slots[i]`` is None while slot i is free."""

    __slots__ = ("slots", "spec")

    def __init__(self, spec: ClusterSpec | None = None) -> None:
        self.spec = spec or ClusterSpec()
        self.slots: list[ClusterSlot | None] = [None] * self.spec.k

    def _new_slot(self, obs: Observation) -> ClusterSlot:
        slot = ClusterSlot(self.spec.half_life_s, self.spec.max_tags_per_cluster)
        slot.add_event(obs)
        return slot

    def update(self, obs: Observation) -> None:
        """Assign one observation (ignored unless its weight is > 0)."""
        if obs.weight <= 0:
            return
        best, best_sim = -1, -math.inf
        for i, slot in enumerate(self.slots):
            if slot is not None:
                sim = slot.cosine(obs.vector)
                if sim > best_sim:
                    best, best_sim = i, sim
        if best >= 0 and (best_sim >= self.spec.threshold or self.spec.k == 1):
            slot = self.slots[best]
            assert slot is not None
            slot.add_event(obs)
            return
        free = next((i for i, s in enumerate(self.slots) if s is None), None)
        if free is not None:
            self.slots[free] = self._new_slot(obs)
            return
        shares = self._shares(obs.ts_ms)
        weakest = min(range(len(shares)), key=lambda i: (shares[i], i))
        if shares[weakest] < self.spec.recycle_share:
            self.slots[weakest] = self._new_slot(obs)
            return
        i, j = self._most_similar_pair()
        self._merge_into(i, j)
        self.slots[j] = self._new_slot(obs)

    def _merge_into(self, i: int, j: int) -> None:
        keep, gone = self.slots[i], self.slots[j]
        assert keep is not None and gone is not None
        keep.merge_slot(gone)
        self.slots[j] = None

    def _most_similar_pair(self) -> tuple[int, int]:
        """Indices (i < j) of the two open slots with the most similar centroids."""
        dirs = [(i, s.get()) for i, s in enumerate(self.slots) if s is not None]
        best, best_sim = (dirs[0][0], dirs[1][0]), -math.inf
        for a in range(len(dirs)):
            for b in range(a + 1, len(dirs)):
                da, db = dirs[a][1], dirs[b][1]
                sim = 0.0 if da is None or db is None else float(da @ db)
                if sim > best_sim:
                    best, best_sim = (dirs[a][0], dirs[b][0]), sim
        return best

    def _shares(self, at_ms: int | None = None) -> list[float]:
        """Each slot's share of the decayed mass (0.0 for free slots), computed in log space so
        slots years apart neither underflow to 0/0 nor overflow."""
        refs = [s.ref_ts_ms for s in self.slots if s is not None and s.ref_ts_ms is not None]
        if not refs:
            return [0.0] * len(self.slots)
        now = max([*refs, at_ms]) if at_ms is not None else max(refs)
        logs: list[float] = []
        for s in self.slots:
            if s is None or s.ref_ts_ms is None or s.mass <= 0:
                logs.append(-math.inf)
            else:
                age_h = (now - s.ref_ts_ms) / 1000.0 / s.half_life_s
                logs.append(math.log(s.mass) - age_h * math.log(2.0))
        top = max(logs)
        if top == -math.inf:
            return [0.0] * len(self.slots)
        exps = [math.exp(v - top) for v in logs]
        total = math.fsum(exps)
        return [e / total for e in exps]

    def weights(self) -> list[float]:
        """Per slot, its decayed mass share in [0, 1] (free slots 0.0); sums to 1 when any open."""
        return self._shares()

    def labels(self, vocabulary: LabelVocabulary | None = None) -> list[str | None]:
        """Per slot a distinct label (None for free slots), assigned heaviest slot first."""
        shares = self._shares()
        order = sorted(
            (i for i, s in enumerate(self.slots) if s is not None), key=lambda i: (-shares[i], i)
        )
        out: list[str | None] = [None] * len(self.slots)
        used: set[str] = set()
        for i in order:
            slot = self.slots[i]
            assert slot is not None
            label = next((t for t, _ in slot.ranked_tags() if t not in used), None)
            direction = slot.get()
            if label is None and vocabulary is not None and direction is not None:
                label = vocabulary.nearest(direction, used)
            if label is None or label in used:
                label = _numbered(slot.ranked_tags(), used) or f"interest {i}"
            used.add(label)
            out[i] = label
        return out

    def profile(self, vocabulary: LabelVocabulary | None = None) -> list[ProfileEntry]:
        """``[{"label", "weight"}]`` heaviest first; weights rounded to 4 decimals, 0s left out."""
        shares, labels = self._shares(), self.labels(vocabulary)
        entries = []
        for i in sorted(range(len(self.slots)), key=lambda i: (-shares[i], i)):
            label, weight = labels[i], round(shares[i], PROFILE_DECIMALS)
            if label is not None and weight > 0:
                entries.append(ProfileEntry(label=label, weight=min(1.0, weight)))
        return entries

    # -- persistence -----------------------------------------------------------------------------
    def vectors(self) -> dict[str, Float32Array]:
        """``{"interest_<i>": float32 unit centroid}`` for every open slot with a direction."""
        out: dict[str, Float32Array] = {}
        for i, slot in enumerate(self.slots):
            vec = None if slot is None else slot.vector()
            if vec is not None:
                out[slot_vector_name(i)] = vec
        return out

    def to_payload(self, vocabulary: LabelVocabulary | None = None) -> list[dict[str, Any]]:
        """One JSON-safe dict per open slot: ``slot``, ``mass``, ``norm``, ``ref_ts_ms``,
        ``count``, ``tags`` (``[[tag, weight], …]`` heaviest first), ``label``, ``weight``."""
        shares, labels = self._shares(), self.labels(vocabulary)
        out: list[dict[str, Any]] = []
        for i, slot in enumerate(self.slots):
            if slot is None:
                continue
            item = {"slot": i, **slot.to_payload()}
            item["tags"] = [[t, float(w)] for t, w in slot.ranked_tags()]
            item["label"] = labels[i]
            item["weight"] = round(shares[i], PROFILE_DECIMALS)
            out.append(item)
        return out

    @classmethod
    def from_stored(
        cls,
        payload: Sequence[Mapping[str, Any]] | None,
        vectors: Mapping[str, Any],
        spec: ClusterSpec | None = None,
    ) -> InterestClusters:
        """Rebuild from :meth:`to_payload` and the stored named vectors (``label``/``weight`` are
        derived, so ignored). If ``spec.k`` shrank, surplus slots merge, most similar first."""
        clusters = cls(spec)
        if not payload:
            return clusters
        if not isinstance(payload, Sequence):
            raise StateError("interests payload must be a list")
        loaded: dict[int, ClusterSlot] = {}
        for item in payload:
            if not isinstance(item, Mapping):
                raise StateError(f"interest slot payload must be an object, got {item!r}")
            index = item.get("slot")
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise StateError(f"interest slot index must be an int ≥ 0, got {index!r}")
            if index in loaded:
                raise StateError(f"interest slot {index} stored twice")
            slot = ClusterSlot(clusters.spec.half_life_s, clusters.spec.max_tags_per_cluster)
            name = slot_vector_name(index)
            slot._load(item, vectors.get(name), name)
            slot.tags = _read_tags(item.get("tags", []), name)
            slot._trim()
            loaded[index] = slot
        k = clusters.spec.k
        if max(loaded) < k:
            clusters.slots = [loaded.get(i) for i in range(k)]
            return clusters
        # Fewer slots configured than stored: compact, then merge the most similar pairs.
        clusters.slots = [loaded[i] for i in sorted(loaded)]
        while len(clusters.slots) > k:
            i, j = clusters._most_similar_pair()
            clusters._merge_into(i, j)
            del clusters.slots[j]
        clusters.slots += [None] * (k - len(clusters.slots))
        return clusters


def _numbered(ranked: Sequence[tuple[str, float]], used: set[str]) -> str | None:
    """``"<heaviest tag> (2)"`` (3, 4 …: the first not in ``used``) for a slot whose tags all
    label heavier slots already; None without tags."""
    if not ranked:
        return None
    top = ranked[0][0]
    n = 2
    while f"{top} ({n})" in used:
        n += 1
    return f"{top} ({n})"


def _read_tags(raw: Any, what: str) -> dict[str, float]:
    if not isinstance(raw, list):
        raise StateError(f"{what}.tags must be a list of [tag, weight]")
    tags: dict[str, float] = {}
    for pair in raw:
        if not (isinstance(pair, list | tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise StateError(f"{what}.tags entry must be [tag, weight], got {pair!r}")
        weight = pair[1]
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise StateError(f"{what}.tags weight must be a number, got {weight!r}")
        if not (math.isfinite(weight) and weight >= 0):
            raise StateError(f"{what}.tags weight must be finite and ≥ 0, got {weight!r}")
        tags[pair[0]] = float(weight)
    return tags
