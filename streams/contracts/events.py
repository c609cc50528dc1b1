"""The event schema of ``interest.events``: parsing, validation and normalisation. No I/O.

Producers send one JSON object per record, keyed by ``user_id``. :func:`parse_event` turns the raw
bytes into an :class:`Event` or raises :class:`InvalidEvent` with a stable machine-readable
``reason`` (used as the DLQ header and the metric label) and a human-readable detail.

>>> e = parse_event(b'{"event_id":"e1","user_id":"u1","type":"click","ts":1700000000000,'
...                 b'"text":"  Deep   learning "}', now_ms=1700000000000)
>>> (e.user_id, e.type, e.weight, e.text)
('u1', 'click', 1.0, 'Deep learning')
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

import orjson

#: Default weight of each known event type. Negative types feed the ``negative`` dimension.
DEFAULT_TYPE_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "view": 0.5,
        "click": 1.0,
        "read": 1.0,
        "search": 1.0,
        "like": 2.0,
        "share": 2.0,
        "purchase": 3.0,
        "dislike": -1.0,
        "skip": -0.5,
    }
)

# Stable reason codes: they label metrics and DLQ headers, so never rename one.
NOT_JSON: Final = "not_json"
NOT_OBJECT: Final = "not_object"
OVERSIZE: Final = "oversize"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
BAD_LENGTH: Final = "bad_length"
UNKNOWN_TYPE: Final = "unknown_type"
BAD_TIMESTAMP: Final = "bad_timestamp"
FUTURE_TIMESTAMP: Final = "future_timestamp"
#: A number that is a plausible time only when read as epoch *seconds* (a unit mistake that would
#: otherwise put the event in January 1970).
SECONDS_TIMESTAMP: Final = "seconds_timestamp"
#: Before ``EventRules.earliest_ms`` or older than ``EventRules.max_age_ms``.
PAST_TIMESTAMP: Final = "past_timestamp"
BAD_WEIGHT: Final = "bad_weight"
TOO_MANY_TAGS: Final = "too_many_tags"
NO_CONTENT: Final = "no_content"
#: A control record (streams.contracts.control) this version cannot read.
BAD_CONTROL: Final = "bad_control"

REASONS: Final = (
    NOT_JSON,
    NOT_OBJECT,
    OVERSIZE,
    MISSING_FIELD,
    WRONG_TYPE,
    BAD_LENGTH,
    UNKNOWN_TYPE,
    BAD_TIMESTAMP,
    FUTURE_TIMESTAMP,
    BAD_WEIGHT,
    TOO_MANY_TAGS,
    NO_CONTENT,
    SECONDS_TIMESTAMP,
    PAST_TIMESTAMP,
    BAD_CONTROL,
)

#: 1990-01-01T00:00:00Z in epoch ms: the default earliest event time. Anything earlier is almost
#: always a unit mistake (epoch seconds read as milliseconds land in January 1970) or a
#: placeholder (0, "1970-01-01"); real histories (MovieLens starts in 1995) come later.
DEFAULT_EARLIEST_MS: Final = 631_152_000_000


class InvalidEvent(ValueError):
    """A record that is not a valid event. ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class EventRules:
    """Limits and type weights applied by :func:`validate_event` (built from settings)."""

    type_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TYPE_WEIGHTS))
    allow_unknown_types: bool = False
    unknown_type_weight: float = 1.0
    max_message_bytes: int = 32 * 1024
    max_text_chars: int = 2000
    max_tags: int = 32
    max_tag_chars: int = 64
    max_future_ms: int = 5 * 60 * 1000
    #: Earliest accepted event time (epoch ms); earlier ones are ``past_timestamp`` (or
    #: ``seconds_timestamp`` when the number makes sense as epoch seconds).
    earliest_ms: int = DEFAULT_EARLIEST_MS
    #: Oldest accepted event age (ms before now); 0 = no limit (replays of old histories pass).
    max_age_ms: int = 0
    max_abs_weight: float = 100.0
    max_event_id_chars: int = 128
    max_user_id_chars: int = 256
    max_item_id_chars: int = 256


DEFAULT_RULES: Final = EventRules()


@dataclass(frozen=True, slots=True)
class Event:
    """A validated, normalised event. ``ts_ms`` is event time in epoch milliseconds (UTC)."""

    event_id: str
    user_id: str
    type: str
    ts_ms: int
    weight: float
    item_id: str | None = None
    text: str | None = None
    tags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The canonical JSON form (``ts`` as int ms); :func:`validate_event` accepts it back."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "type": self.type,
            "ts": self.ts_ms,
            "weight": self.weight,
        }
        if self.item_id is not None:
            out["item_id"] = self.item_id
        if self.text is not None:
            out["text"] = self.text
        if self.tags:
            out["tags"] = list(self.tags)
        return out

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()


_WHITESPACE = re.compile(r"\s+")
# Unicode category Cc is exactly these two ranges; a regex keeps the scan in C.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def normalize_text(text: str) -> str:
    """Unicode NFKC, every run of whitespace (and control characters) as one space, stripped.

    Idempotent: ``normalize_text(normalize_text(s)) == normalize_text(s)``.

    >>> normalize_text("ＧＡＮ\\t use\\u00a0cases\\n")
    'GAN use cases'
    """
    if text.isascii() and text.isprintable():
        # The common case (printable ASCII is already NFKC and has no control characters).
        return " ".join(text.split())
    text = unicodedata.normalize("NFKC", text)
    # Control characters other than whitespace carry no meaning for an embedding model.
    text = _CONTROL.sub(" ", text)
    text = _WHITESPACE.sub(" ", text).strip()
    # NFKC of the joined result can differ from the parts (e.g. combining marks after a space).
    again = unicodedata.normalize("NFKC", text)
    return text if again == text else normalize_text(again)


def normalize_tag(tag: str) -> str:
    """A tag as used in labels: normalised text, case-folded."""
    return normalize_text(tag).casefold()


def parse_event(raw: bytes, *, now_ms: int, rules: EventRules = DEFAULT_RULES) -> Event:
    """Decode and validate one record's value. Raises :class:`InvalidEvent`."""
    if len(raw) > rules.max_message_bytes:
        raise InvalidEvent(OVERSIZE, f"{len(raw)} bytes > limit {rules.max_message_bytes}")
    try:
        # Strict RFC 8259 (no NaN/Infinity literals) and valid UTF-8 throughout: a lone
        # surrogate escape ("\ud800"), which json.loads accepts, would make every later encode of
        # the event fail -- a poison pill for the stream worker.
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(NOT_JSON, str(exc)) from None
    if not isinstance(obj, dict):
        raise InvalidEvent(NOT_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    return validate_event(obj, now_ms=now_ms, rules=rules)


def validate_event(
    obj: Mapping[str, Any], *, now_ms: int, rules: EventRules = DEFAULT_RULES
) -> Event:
    """Validate a decoded JSON object. Unknown fields are ignored (forward compatibility)."""
    event_id = required_str(obj, "event_id", rules.max_event_id_chars)
    user_id = required_str(obj, "user_id", rules.max_user_id_chars)
    type_ = required_str(obj, "type", 64).strip().lower()
    if type_ in rules.type_weights:
        default_weight = rules.type_weights[type_]
    elif rules.allow_unknown_types:
        default_weight = rules.unknown_type_weight
    else:
        known = ", ".join(sorted(rules.type_weights))
        raise InvalidEvent(UNKNOWN_TYPE, f"type {type_!r} is not one of {known}")
    ts_ms = _timestamp(obj, now_ms=now_ms, rules=rules)
    weight = _weight(obj, default_weight, rules.max_abs_weight)

    item_id = _optional_str(obj, "item_id", rules.max_item_id_chars)
    text = None
    raw_text = obj.get("text")
    if raw_text is not None:
        if not isinstance(raw_text, str):
            raise InvalidEvent(WRONG_TYPE, f"text must be a string, got {_json_type(raw_text)}")
        _check_unicode(raw_text, "text")
        text = normalize_text(raw_text)[: rules.max_text_chars].rstrip() or None
    if item_id is None and text is None:
        raise InvalidEvent(NO_CONTENT, "an event needs item_id or a non-empty text")
    tags = _tags(obj.get("tags"), rules)
    return Event(
        event_id=event_id,
        user_id=user_id,
        type=type_,
        ts_ms=ts_ms,
        weight=weight,
        item_id=item_id,
        text=text,
        tags=tags,
    )


def _json_type(value: object) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
    names[dict] = "object"
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _check_unicode(value: str, name: str) -> None:
    """Reject a string UTF-8 cannot encode (a lone surrogate, from a Python caller): every
    later encode of the event -- state, job, DLQ detail -- would fail on it."""
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidEvent(WRONG_TYPE, f"{name} must be valid Unicode text") from None


def required_str(obj: Mapping[str, Any], name: str, max_chars: int) -> str:
    """Field ``name`` of ``obj``: a non-blank string of valid Unicode of at most ``max_chars``;
    else :class:`InvalidEvent` (``missing_field``, ``wrong_type`` or ``bad_length``)."""
    if name not in obj or obj[name] is None:
        raise InvalidEvent(MISSING_FIELD, f"{name} is required")
    value = _optional_str(obj, name, max_chars)
    assert value is not None
    return value


def _optional_str(obj: Mapping[str, Any], name: str, max_chars: int) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(WRONG_TYPE, f"{name} must be a string, got {_json_type(value)}")
    _check_unicode(value, name)
    if not value.strip():
        raise InvalidEvent(BAD_LENGTH, f"{name} must not be empty")
    if len(value) > max_chars:
        raise InvalidEvent(BAD_LENGTH, f"{name} has {len(value)} chars > limit {max_chars}")
    return value


def _timestamp(obj: Mapping[str, Any], *, now_ms: int, rules: EventRules) -> int:
    value = obj.get("ts")
    if value is None:
        raise InvalidEvent(MISSING_FIELD, "ts is required")
    if isinstance(value, bool):
        raise InvalidEvent(WRONG_TYPE, "ts must be epoch milliseconds or ISO-8601, got boolean")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0 or value >= 2**53:
            raise InvalidEvent(BAD_TIMESTAMP, f"ts {value!r} is not a valid epoch-ms time")
        ts_ms = int(value)
        if ts_ms < rules.earliest_ms and _plausible(ts_ms * 1000, now_ms, rules):
            raise InvalidEvent(
                SECONDS_TIMESTAMP,
                f"ts {value!r} looks like epoch seconds ({_iso(ts_ms * 1000)}); send epoch "
                f"milliseconds ({ts_ms * 1000}) or ISO-8601",
            )
    elif isinstance(value, str):
        ts_ms = _iso_timestamp(value)
    else:
        raise InvalidEvent(
            WRONG_TYPE, f"ts must be epoch milliseconds or ISO-8601, got {_json_type(value)}"
        )
    _check_time_bounds(value, ts_ms, now_ms, rules)
    return ts_ms


def _iso_timestamp(value: str) -> int:
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidEvent(BAD_TIMESTAMP, f"ts {value!r} is not ISO-8601") from None
    if parsed.tzinfo is None:  # naive times are taken as UTC, the only safe reading
        parsed = parsed.replace(tzinfo=UTC)
    ts_ms = int(parsed.timestamp() * 1000)
    if ts_ms < 0:
        raise InvalidEvent(BAD_TIMESTAMP, f"ts {value!r} is before 1970")
    return ts_ms


def _check_time_bounds(value: object, ts_ms: int, now_ms: int, rules: EventRules) -> None:
    """Too far ahead (``future_timestamp``), before the earliest accepted time or older than the
    accepted age (``past_timestamp``); each detail names the time and the setting."""
    if ts_ms > now_ms + rules.max_future_ms:
        ahead = (ts_ms - now_ms) / 1000
        hint = ""
        if isinstance(value, int | float) and _plausible(ts_ms // 1000, now_ms, rules):
            hint = f"; it looks like epoch microseconds ({_iso(ts_ms // 1000)}), send milliseconds"
        raise InvalidEvent(FUTURE_TIMESTAMP, f"ts is {ahead:.0f} s in the future{hint}")
    if ts_ms < rules.earliest_ms:
        raise InvalidEvent(
            PAST_TIMESTAMP,
            f"ts {value!r} ({_iso(ts_ms)}) is before the earliest accepted time "
            f"{_iso(rules.earliest_ms)} (INTEREST_INTAKE_EARLIEST_TS)",
        )
    if rules.max_age_ms and ts_ms < now_ms - rules.max_age_ms:
        raise InvalidEvent(
            PAST_TIMESTAMP,
            f"ts {value!r} ({_iso(ts_ms)}) is {(now_ms - ts_ms) / 86_400_000:.1f} days old, "
            f"over the limit of {rules.max_age_ms / 86_400_000:g} days (INTEREST_INTAKE_MAX_AGE_S)",
        )


def _plausible(ts_ms: int, now_ms: int, rules: EventRules) -> bool:
    """Whether ``ts_ms`` passes the time bounds (used to recognise a unit mistake)."""
    if ts_ms < rules.earliest_ms or ts_ms > now_ms + rules.max_future_ms:
        return False
    return not rules.max_age_ms or ts_ms >= now_ms - rules.max_age_ms


def _iso(ts_ms: int) -> str:
    """``2026-12-06T15:42:34Z`` for people (whole seconds, UTC)."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _weight(obj: Mapping[str, Any], default: float, max_abs: float) -> float:
    value = obj.get("weight")
    if value is None:
        return float(default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(WRONG_TYPE, f"weight must be a number, got {_json_type(value)}")
    if not math.isfinite(value):
        raise InvalidEvent(BAD_WEIGHT, f"weight {value!r} is not finite")
    if abs(value) > max_abs:
        raise InvalidEvent(BAD_WEIGHT, f"weight {value!r} is outside ±{max_abs:g}")
    return float(value)


def _tags(value: object, rules: EventRules) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidEvent(WRONG_TYPE, f"tags must be an array of strings, got {_json_type(value)}")
    if len(value) > rules.max_tags:
        raise InvalidEvent(TOO_MANY_TAGS, f"{len(value)} tags > limit {rules.max_tags}")
    out: list[str] = []
    for tag in value:
        if not isinstance(tag, str):
            raise InvalidEvent(WRONG_TYPE, f"tags must be strings, got {_json_type(tag)}")
        _check_unicode(tag, "tags")
        norm = normalize_tag(tag)[: rules.max_tag_chars].rstrip()
        if norm and norm not in out:
            out.append(norm)
    return tuple(out)
