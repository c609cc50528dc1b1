"""Control records on ``interest.events``: a request to forget a user. No I/O.

A user is deleted by a record on the events topic itself, keyed by the user id like the user's
events, so that it lands in the same partition and is read in order with them: whatever the
stream worker read before it is forgotten, whatever comes after starts a new profile, and a
replay of the topic (a restart, a rebuild) meets the delete at the same place again -- nothing
can bring the user back.

The record is told apart from events by a header, never by its body, so no producer's event can
be mistaken for one::

    key     = user_id (UTF-8)
    headers = [("interest.control", b"delete_user")]
    value   = {"user_id": "u1", "requested_at": 1700000000000, "by": "cli"}

>>> key, value, headers = delete_user_record("u1", now_ms=1700000000000, by="cli")
>>> key, control_of(headers)
(b'u1', 'delete_user')
>>> parse_delete_user(value, max_user_id_chars=256).user_id
'u1'
>>> parse_delete_user(b'{"user_id": ""}', max_user_id_chars=256)
Traceback (most recent call last):
...
streams.contracts.events.InvalidEvent: bad_control: user_id must not be empty
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from streams.contracts.events import BAD_CONTROL, InvalidEvent, required_str

#: The header that marks a control record; its value names the operation.
CONTROL_HEADER: Final = "interest.control"
DELETE_USER: Final = "delete_user"
#: The operations this version knows. A record with the header and another value is a dead
#: letter (``bad_control``), never taken for an event.
OPERATIONS: Final = (DELETE_USER,)


@dataclass(frozen=True, slots=True)
class DeleteUser:
    """A request to forget ``user_id``: its profile point and its stream state."""

    user_id: str
    requested_at_ms: int
    #: Who asked (``cli``, ``api`` ...), for the logs.
    by: str = ""


def control_of(headers: Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None) -> str | None:
    """The operation a record's headers name, or None for an ordinary event.

    Raises :class:`InvalidEvent` (``bad_control``) for a control header this version does not
    know: ignoring it would read a delete request of a newer producer as an event.
    """
    if not headers:
        return None
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        if name == CONTROL_HEADER:
            op = bytes(value or b"").decode("utf-8", "replace")
            if op not in OPERATIONS:
                raise InvalidEvent(BAD_CONTROL, f"unknown control operation {op!r}")
            return op
    return None


def delete_user_record(
    user_id: str, *, now_ms: int, by: str = ""
) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """``(key, value, headers)`` of the record that deletes ``user_id``."""
    value = orjson.dumps({"user_id": user_id, "requested_at": now_ms, "by": by})
    return user_id.encode(), value, [(CONTROL_HEADER, DELETE_USER.encode())]


def parse_delete_user(raw: bytes | None, *, max_user_id_chars: int) -> DeleteUser:
    """Read a delete request's value; raises :class:`InvalidEvent` (``bad_control``)."""
    try:
        obj: Any = orjson.loads(raw or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(BAD_CONTROL, f"delete_user value is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent(BAD_CONTROL, "delete_user value must be a JSON object")
    user_id = check_user_id(obj.get("user_id"), max_user_id_chars)
    requested = obj.get("requested_at", 0)
    if isinstance(requested, bool) or not isinstance(requested, int):
        requested = 0
    by = obj.get("by", "")
    return DeleteUser(user_id, requested, by if isinstance(by, str) else "")


def check_user_id(user_id: object, max_chars: int) -> str:
    """``user_id`` if it is one a delete can name -- the rules of an event's ``user_id``
    (:func:`~streams.contracts.events.required_str`) -- else :class:`InvalidEvent`
    (``bad_control``) with the reason in one line (the CLI and the API say it as it is)."""
    try:
        return required_str({"user_id": user_id}, "user_id", max_chars)
    except InvalidEvent as exc:
        raise InvalidEvent(BAD_CONTROL, exc.detail) from None
