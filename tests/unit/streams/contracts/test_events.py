"""The event schema: every rule of the design's table, and the normaliser's properties."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.contracts.events import (
    BAD_LENGTH,
    BAD_TIMESTAMP,
    BAD_WEIGHT,
    DEFAULT_RULES,
    DEFAULT_TYPE_WEIGHTS,
    FUTURE_TIMESTAMP,
    MISSING_FIELD,
    NO_CONTENT,
    NOT_JSON,
    NOT_OBJECT,
    OVERSIZE,
    REASONS,
    TOO_MANY_TAGS,
    UNKNOWN_TYPE,
    WRONG_TYPE,
    Event,
    EventRules,
    InvalidEvent,
    normalize_text,
    parse_event,
    validate_event,
)

NOW = 1_700_000_000_000


def ev(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "event_id": "e1",
        "user_id": "u1",
        "type": "click",
        "ts": NOW - 1000,
        "text": "deep learning",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


def reason_of(obj: object, rules: EventRules = DEFAULT_RULES) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw, now_ms=NOW, rules=rules)
    assert info.value.reason in REASONS
    assert "\n" not in str(info.value)
    return info.value.reason


def test_valid_event_is_parsed_and_normalised() -> None:
    raw = json.dumps(
        ev(text="  Deep \n learning\t", tags=["ML", " ml ", "GANs"], item_id="i9")
    ).encode()
    e = parse_event(raw, now_ms=NOW)
    assert e == Event("e1", "u1", "click", NOW - 1000, 1.0, "i9", "Deep learning", ("ml", "gans"))


@pytest.mark.parametrize(("type_", "weight"), sorted(DEFAULT_TYPE_WEIGHTS.items()))
def test_known_types_map_to_design_weights(type_: str, weight: float) -> None:
    assert validate_event(ev(type=type_), now_ms=NOW).weight == weight


def test_type_is_case_insensitive() -> None:
    assert validate_event(ev(type=" Purchase "), now_ms=NOW).type == "purchase"


def test_weight_override_is_kept() -> None:
    assert validate_event(ev(weight=0.25), now_ms=NOW).weight == 0.25
    assert validate_event(ev(weight=-2), now_ms=NOW).weight == -2.0


def test_iso_timestamps_are_utc_milliseconds() -> None:
    e = validate_event(ev(ts="2023-11-14T22:13:19.500Z"), now_ms=NOW)
    assert e.ts_ms == 1_699_999_999_500
    naive = validate_event(ev(ts="2023-11-14T22:13:19.500"), now_ms=NOW)
    assert naive.ts_ms == e.ts_ms
    offset = validate_event(ev(ts="2023-11-15T00:13:19.500+02:00"), now_ms=NOW)
    assert offset.ts_ms == e.ts_ms


def test_item_id_alone_is_enough() -> None:
    e = validate_event(ev(text=..., item_id="i1"), now_ms=NOW)
    assert e.text is None and e.item_id == "i1"


def test_long_text_is_truncated_not_rejected() -> None:
    e = validate_event(ev(text="word " * 1000), now_ms=NOW, rules=EventRules(max_text_chars=50))
    assert e.text is not None and len(e.text) <= 50 and not e.text.endswith(" ")


def test_unknown_fields_are_ignored() -> None:
    assert validate_event(ev(extra={"a": 1}), now_ms=NOW).event_id == "e1"


def test_unknown_type_can_be_allowed() -> None:
    rules = EventRules(allow_unknown_types=True, unknown_type_weight=0.3)
    assert validate_event(ev(type="hover"), now_ms=NOW, rules=rules).weight == 0.3


def test_future_tolerance_is_five_minutes() -> None:
    assert validate_event(ev(ts=NOW + 5 * 60 * 1000), now_ms=NOW).ts_ms == NOW + 300_000
    assert reason_of(ev(ts=NOW + 5 * 60 * 1000 + 1)) == FUTURE_TIMESTAMP


def test_round_trip_through_canonical_json() -> None:
    e = validate_event(ev(tags=["a"], item_id="i", weight=1.5), now_ms=NOW)
    assert parse_event(e.to_json(), now_ms=NOW) == e


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", NOT_JSON),
        (b"\xff\xfe", NOT_JSON),
        (b"", NOT_JSON),
        (b"[1, 2]", NOT_OBJECT),
        (b'"text"', NOT_OBJECT),
        (b"null", NOT_OBJECT),
        (b"[" * 100_000 + b"]" * 100_000, OVERSIZE),
    ],
)
def test_undecodable_records(raw: bytes, reason: str) -> None:
    assert reason_of(raw) == reason


def test_deep_nesting_within_size_limit_is_not_json() -> None:
    raw = b"[" * 20_000 + b"]" * 20_000
    assert reason_of(raw, EventRules(max_message_bytes=100_000)) in {NOT_JSON, NOT_OBJECT}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"event_id": ...}, MISSING_FIELD),
        ({"user_id": ...}, MISSING_FIELD),
        ({"type": ...}, MISSING_FIELD),
        ({"ts": ...}, MISSING_FIELD),
        ({"user_id": None}, MISSING_FIELD),
        ({"event_id": 7}, WRONG_TYPE),
        ({"user_id": ["u"]}, WRONG_TYPE),
        ({"type": 1}, WRONG_TYPE),
        ({"text": 5}, WRONG_TYPE),
        ({"item_id": 5}, WRONG_TYPE),
        ({"ts": True}, WRONG_TYPE),
        ({"ts": {"ms": 1}}, WRONG_TYPE),
        ({"weight": "2"}, WRONG_TYPE),
        ({"weight": True}, WRONG_TYPE),
        ({"tags": "ml"}, WRONG_TYPE),
        ({"tags": ["ok", 3]}, WRONG_TYPE),
        ({"event_id": ""}, BAD_LENGTH),
        ({"user_id": "   "}, BAD_LENGTH),
        ({"event_id": "x" * 129}, BAD_LENGTH),
        ({"user_id": "x" * 257}, BAD_LENGTH),
        ({"type": "teleport"}, UNKNOWN_TYPE),
        ({"ts": -1}, BAD_TIMESTAMP),
        ({"ts": "yesterday"}, BAD_TIMESTAMP),
        ({"ts": 2**60}, BAD_TIMESTAMP),
        ({"ts": "1969-12-31T00:00:00Z"}, BAD_TIMESTAMP),
        ({"ts": NOW + 3_600_000}, FUTURE_TIMESTAMP),
        ({"weight": 1e9}, BAD_WEIGHT),
        ({"tags": [f"t{i}" for i in range(33)]}, TOO_MANY_TAGS),
        ({"text": ...}, NO_CONTENT),
        ({"text": "  \n\t "}, NO_CONTENT),
    ],
)
def test_invalid_events(overrides: dict[str, object], reason: str) -> None:
    assert reason_of(ev(**overrides)) == reason


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_weight(literal: str) -> None:
    # NaN/Infinity literals are not JSON (RFC 8259): such a record is rejected as not JSON ...
    raw = json.dumps(ev(weight=0.5)).replace("0.5", literal).encode()
    assert reason_of(raw) == NOT_JSON
    # ... and a non-finite weight from a Python caller (interest-stream publish) as a weight.
    with pytest.raises(InvalidEvent) as info:
        validate_event(ev(weight=float(literal.lower())), now_ms=NOW)
    assert info.value.reason == BAD_WEIGHT


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "text", "tags"])
def test_lone_surrogates_are_rejected_not_a_poison_pill(field: str) -> None:
    """A lone surrogate escape is JSON syntax that json.loads accepts, but no text: such an event
    used to pass validation and crash the stream worker at the first encode of its state."""
    value: object = ["bad \ud800 tag"] if field == "tags" else "bad \ud800 text"
    raw = json.dumps(ev(**{field: value}))  # the escape as it travels: backslash-u, ASCII only
    assert "\\ud800" in raw
    assert reason_of(raw.encode()) == NOT_JSON
    with pytest.raises(InvalidEvent) as info:  # the decoded form, from a Python caller
        validate_event(json.loads(raw), now_ms=NOW)
    assert info.value.reason == WRONG_TYPE
    assert field in str(info.value)


def test_oversize_message() -> None:
    assert reason_of(ev(text="x" * 40_000)) == OVERSIZE


# -- normaliser properties ------------------------------------------------------------------


@given(st.text())
def test_normalize_is_idempotent(s: str) -> None:
    once = normalize_text(s)
    assert normalize_text(once) == once


@given(st.text())
def test_normalize_has_no_edge_or_double_whitespace(s: str) -> None:
    out = normalize_text(s)
    assert out == out.strip()
    assert "  " not in out
    assert not any(ch in out for ch in "\t\n\r\x0b\x0c")
    assert all(unicodedata.category(ch) != "Cc" for ch in out)


@given(st.text())
def test_normalize_is_nfkc(s: str) -> None:
    out = normalize_text(s)
    assert unicodedata.normalize("NFKC", out) == out


_WORD = st.text(alphabet=st.characters(categories=["Lu", "Ll", "Nd"]), min_size=1).filter(
    lambda w: unicodedata.normalize("NFKC", w) == w
)


@given(st.lists(_WORD, min_size=1, max_size=6), st.text(" \t\n\r\u00a0", min_size=1))
def test_normalize_collapses_any_whitespace_between_words(words: list[str], gap: str) -> None:
    assert normalize_text(gap + gap.join(words) + gap) == " ".join(words)


def test_normalize_examples() -> None:
    assert normalize_text("ＧＡＮ\t use\u00a0cases\n") == "GAN use cases"
    assert normalize_text("a\x00b") == "a b"
    assert normalize_text("") == ""


def _reference_normalize(s: str) -> str:
    import re

    out = unicodedata.normalize("NFKC", s)
    out = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in out)
    return re.sub(r"\s+", " ", out).strip()


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x17F)))
def test_fast_paths_agree_with_the_reference_definition(s: str) -> None:
    want = _reference_normalize(s)
    assert normalize_text(s) == (
        want if unicodedata.normalize("NFKC", want) == want else normalize_text(want)
    )
