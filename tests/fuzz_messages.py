"""Hostile and valid records for the events topic, each with what the stream worker must do with it.

Every case is a function ``(rng, i) -> Message``: a good one is a valid event (``good``: the
(user_id, event_id) it must become, once) dressed up in ways the schema allows (a key that
disagrees with user_id, escaped control characters, unknown fields with deep nesting or huge
numbers, a duplicated key with the same value, a 30 kB text); a bad one carries the DLQ reason it
must get (``reason``; None where any reason of ``streams.contracts.events.REASONS`` will do:
random bytes). ``i`` makes event ids unique. Used by the property test
(tests/unit/streams/stream/test_fuzz.py), the worker test (tests/integration/test_fuzz.py) and
bench/fuzz_bench.py.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from streams.contracts.dlq import MAX_CARRIED

#: Event time of every generated event (ms): in the past of any clock the tests use.
TS = 1_700_000_000_000

USERS = ("alice", "bob", "carol", "dave", "eve", "ünï-çødé", "tab\tuser", "x" * 256)


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes | None
    #: (user_id, event_id) of a good message; None for a bad one.
    good: tuple[str, str] | None = None
    #: The DLQ reason a bad message must get (None: any reason).
    reason: str | None = None
    case: str = ""


def carried(m: Message) -> tuple[bytes | None, bytes]:
    """The key and value a dead letter of ``m`` carries: the original bytes, cut at
    streams.contracts.dlq.MAX_CARRIED (the rest is described in its headers)."""
    key = None if m.key is None else m.key[:MAX_CARRIED]
    return key, (m.value or b"")[:MAX_CARRIED]


def body(i: int, rng: random.Random, **fields: object) -> dict[str, object]:
    user = rng.choice(USERS)
    out: dict[str, object] = {
        "event_id": f"ev-{i}",
        "user_id": user,
        "type": rng.choice(["view", "click", "like", "dislike", "purchase"]),
        "ts": TS + i,
        "text": f"text {i}",
    }
    out.update(fields)
    return out


def dumps(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=rng_free_ascii(obj)).encode()


def rng_free_ascii(obj: object) -> bool:
    # Half the events in escaped form, half in raw UTF-8, decided by content (deterministic).
    return len(repr(obj)) % 2 == 0


def _good(
    obj: dict[str, object], key: bytes | None, case: str, raw: bytes | None = None
) -> Message:
    value = raw if raw is not None else dumps(obj)
    return Message(key, value, good=(str(obj["user_id"]), str(obj["event_id"])), case=case)


def _bad(key: bytes | None, value: bytes | None, reason: str | None, case: str) -> Message:
    return Message(key, value, reason=reason, case=case)


# -- good ------------------------------------------------------------------------------------


def good_plain(rng: random.Random, i: int) -> Message:
    obj = body(i, rng)
    return _good(obj, str(obj["user_id"]).encode(), "good")


def good_other_key(rng: random.Random, i: int) -> Message:
    obj = body(i, rng)
    key = rng.choice([None, b"", b"someone-else", rng.randbytes(8)])
    return _good(obj, key, "good: key disagrees with user_id")


def good_control_chars(rng: random.Random, i: int) -> Message:
    text = "".join(chr(rng.randrange(0, 0x20)) + "w" for _ in range(20)) + "\x7f\u0085\u2028"
    obj = body(i, rng, text=text, tags=["\x00tag", "t\u200bag"])
    return _good(obj, str(obj["user_id"]).encode(), "good: escaped control characters")


def good_junk_fields(rng: random.Random, i: int) -> Message:
    depth = rng.randrange(1, 200)
    obj = body(i, rng, extra=json.loads("[" * depth + "]" * depth), big=10**300, neg=-(10**18))
    obj["weight"] = rng.choice([0, -100, 100, 1e-300, 5e-324])
    return _good(obj, str(obj["user_id"]).encode(), "good: unknown fields")


def good_duplicate_same(rng: random.Random, i: int) -> Message:
    obj = body(i, rng)
    raw = dumps(obj)
    dup = b'{"user_id":' + json.dumps(obj["user_id"]).encode() + b"," + raw[1:]
    return _good(obj, str(obj["user_id"]).encode(), "good: duplicate key, same value", dup)


def good_long_text(rng: random.Random, i: int) -> Message:
    obj = body(i, rng, text="long " * 6000, item_id=f"item-{i % 7}")
    return _good(obj, str(obj["user_id"]).encode(), "good: 30 kB text")


# -- bad -------------------------------------------------------------------------------------


def bad_random_bytes(rng: random.Random, i: int) -> Message:
    key, value = rng.randbytes(rng.randrange(0, 64)), rng.randbytes(rng.randrange(0, 300))
    return _bad(key, value, None, "random bytes")


def bad_utf8(rng: random.Random, i: int) -> Message:
    raw = dumps(body(i, rng, text="@@"))
    junk = rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
    return _bad(b"u", raw.replace(b"@@", junk), "not_json", "invalid UTF-8")


def bad_deep_nesting(rng: random.Random, i: int) -> Message:
    depth = rng.randrange(1100, 5000)
    if rng.random() < 0.5:
        return _bad(b"u", b"[" * depth + b"]" * depth, "not_json", "deep nesting")
    raw = dumps(body(i, rng, extra="@@")).replace(b'"@@"', b'{"a":' * depth + b"1" + b"}" * depth)
    return _bad(b"u", raw, "not_json", "deep nesting in a field")


def bad_huge_number(rng: random.Random, i: int) -> Message:
    field, reason = rng.choice([("ts", "bad_timestamp"), ("weight", "bad_weight")])
    digits = rng.randrange(17, 300)
    raw = dumps(body(i, rng, **{field: "@@"})).replace(b'"@@"', b"9" * digits)
    return _bad(b"u", raw, reason, f"huge {field}")


def bad_overflow(rng: random.Random, i: int) -> Message:
    field = rng.choice(["ts", "weight", "extra"])
    literal = rng.choice([b"1e400", b"-1e999", b"9" * 400])
    raw = dumps(body(i, rng, **{field: "@@"})).replace(b'"@@"', literal)
    return _bad(b"u", raw, "not_json", f"{field} overflows a double")


def bad_nan(rng: random.Random, i: int) -> Message:
    field = rng.choice(["ts", "weight", "extra"])
    literal = rng.choice([b"NaN", b"Infinity", b"-Infinity", b"nan", b"inf"])
    raw = dumps(body(i, rng, **{field: "@@"})).replace(b'"@@"', literal)
    return _bad(b"u", raw, "not_json", f"{field} {literal.decode()}")


def bad_surrogate(rng: random.Random, i: int) -> Message:
    field = rng.choice(["text", "user_id", "event_id", "item_id", "tags"])
    escape = rng.choice([b'"\\ud800"', b'"a\\udfff"', b'"\\udc00\\ud800"', b'"x\\ud83d"'])
    if field == "tags":
        escape = b"[" + escape + b"]"
    raw = dumps(body(i, rng, **{field: "@@"})).replace(b'"@@"', escape)
    return _bad(b"u", raw, "not_json", f"lone surrogate in {field}")


#: About 1 MB: the largest record the stream worker can dead-letter (faust's producer refuses a
#: request over 1,000,000 bytes, and a dead letter carries the record's bytes; a larger one that
#: the broker accepts -- up to about 1,048,588 bytes -- crashes the worker: see
#: tests/integration/test_fuzz.py, test_a_record_over_the_producers_limit_is_dead_lettered).
MEGABYTE = 990_000


def bad_megabyte(rng: random.Random, i: int, size: int = MEGABYTE) -> Message:
    raw = dumps(body(i, rng, text="m" * size))
    return _bad(b"u", raw, "oversize", "1 MB string")


WRONG: dict[str, list[object]] = {
    "event_id": [True, 1, 1.5, [], {}, ["e"]],
    "user_id": [False, 0, -3.5, ["u"], {"u": 1}],
    "type": [True, 2, [], {"t": "click"}],
    "ts": [True, False, [], {}, [TS]],
    "weight": ["1", True, [], {}, [1.0]],
    "item_id": [True, 7, [], {}],
    "text": [1, True, [], {}, ["t"]],
    "tags": ["a", 1, True, {}, [1], [None], [["a"]]],
}


def bad_wrong_type(rng: random.Random, i: int) -> Message:
    field = rng.choice(sorted(WRONG))
    wrong = rng.choice(WRONG[field])
    return _bad(b"u", dumps(body(i, rng, **{field: wrong})), "wrong_type", f"{field}: wrong type")


def bad_missing(rng: random.Random, i: int) -> Message:
    obj = body(i, rng)
    field = rng.choice(["event_id", "user_id", "type", "ts"])
    if rng.random() < 0.5:
        del obj[field]
    else:
        obj[field] = None
    return _bad(b"u", dumps(obj), "missing_field", f"{field} missing")


def bad_duplicate_key(rng: random.Random, i: int) -> Message:
    raw = dumps(body(i, rng))
    last, reason = rng.choice(
        [
            (b'"ts":true', "wrong_type"),
            (b'"type":"teleport"', "unknown_type"),
            (b'"user_id":null', "missing_field"),
            (b'"text":7', "wrong_type"),
        ]
    )
    return _bad(b"u", raw[:-1] + b"," + last + b"}", reason, "duplicate key, bad last value")


def bad_control_char(rng: random.Random, i: int) -> Message:
    raw = dumps(body(i, rng, text="@@"))
    raw = raw.replace(b"@@", bytes([rng.randrange(0, 0x20)]))
    return _bad(b"u", raw, "not_json", "raw control character in a string")


def bad_schema(rng: random.Random, i: int) -> Message:
    cases: list[tuple[dict[str, object] | bytes | None, str]] = [
        (None, "not_json"),
        (b"", "not_json"),
        (b"[]", "not_object"),
        (b'"event"', "not_object"),
        (b"null", "not_object"),
        (body(i, rng, type="teleport"), "unknown_type"),
        (body(i, rng, ts=TS + 10**12), "future_timestamp"),
        (body(i, rng, ts=-1), "bad_timestamp"),
        (body(i, rng, ts="yesterday"), "bad_timestamp"),
        (body(i, rng, weight=101), "bad_weight"),
        (body(i, rng, event_id="   "), "bad_length"),
        (body(i, rng, user_id="u" * 257), "bad_length"),
        (body(i, rng, tags=[f"t{n}" for n in range(33)]), "too_many_tags"),
        (body(i, rng, text="  \x00 \t "), "no_content"),
    ]
    value, reason = rng.choice(cases)
    raw = value if value is None or isinstance(value, bytes) else dumps(value)
    key = rng.choice([None, b"u", b"alice"]) if raw is not None else b"u"  # Kafka needs one
    return _bad(key, raw, reason, f"schema: {reason}")


Case = Callable[[random.Random, int], Message]

GOOD: tuple[Case, ...] = (
    good_plain,
    good_other_key,
    good_control_chars,
    good_junk_fields,
    good_duplicate_same,
    good_long_text,
)
BAD: tuple[Case, ...] = (
    bad_random_bytes,
    bad_utf8,
    bad_deep_nesting,
    bad_huge_number,
    bad_overflow,
    bad_nan,
    bad_surrogate,
    bad_megabyte,
    bad_wrong_type,
    bad_missing,
    bad_duplicate_key,
    bad_control_char,
    bad_schema,
)


def mixed(n: int, seed: int, *, bad_share: float = 0.5, megabytes: int = 3) -> list[Message]:
    """``n`` messages, about ``bad_share`` of them bad, every case present; at most
    ``megabytes`` 1 MB ones (the broker's default max message size is about 1 MB)."""
    rng = random.Random(seed)
    out: list[Message] = []
    big = 0
    for i in range(n):
        every = (*BAD, *GOOD)
        case = every[i] if i < len(every) else rng.choice(BAD if rng.random() < bad_share else GOOD)
        if case is bad_megabyte:
            big += 1
            if big > megabytes:
                case = bad_wrong_type
        out.append(case(rng, i))
    return out
