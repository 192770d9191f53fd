"""The lean stored form of an event (SQLite's `log` table): small codes, packed ids and times,
positional fields.

Every mapping here is frozen: a stored row is read back by these tables long after it was
written, so a type's code and a layout's field order never change. A new shape of an event type
gets a new schema version (`upcast.py`) and a new layout beside the old one.

- `type`: the event type's code and the fields' schema version in one small integer,
  `code + 16 * (schema - 1)` (a column of its own for the version cost a byte per row for the
  issue's target); a type this version does not know stays text, `name/schema`.
- `event_id`: 16 bytes when the id is a canonical (lowercase, hyphenated) UUID, else the client's
  text as given. SQLite never finds a blob equal to a text, and canonical text <-> bytes is a
  bijection, so the unique index on the column is exactly as strict as one on the text.
- `at`: `recorded_at` as integer microseconds since `AT_EPOCH`, when the text reads back exactly;
  otherwise the text.
- `data`: the fields as a JSON array in the layout's order, trailing unset optional fields
  dropped, a flag (`internal`) as 1 or 0. Rows copied from the old layout that do not fit theirs
  keep their JSON object, which `codec.decode_stored` reads as before.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, overload

import attrs
import orjson

from jobtracker.domain.errors import UnreadableLog
from jobtracker.domain.events import (
    EVENT_CLASSES,
    CancelRequested,
    Created,
    EmailFailed,
    EmailSent,
    Event,
    Failed,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.domain.upcast import current_version, upcast

#: Each event type's code (below `_SCHEMA_STEP`). Frozen.
TYPE_CODES: dict[str, int] = {
    "created": 1,
    "started": 2,
    "progress": 3,
    "row_succeeded": 4,
    "row_failed": 5,
    "email_sent": 6,
    "email_failed": 7,
    "succeeded": 8,
    "failed": 9,
    "cancel_requested": 10,
}
TYPE_NAMES: dict[int, str] = {code: name for name, code in TYPE_CODES.items()}
_SCHEMA_STEP = 16

#: The field order of `data` for each (type, schema version). Frozen: add, never edit.
LAYOUTS: dict[tuple[str, int], tuple[str, ...]] = {
    ("created", 1): ("owner", "total", "label", "heartbeat_timeout", "timeout", "labels"),
    ("started", 1): (),
    ("progress", 1): ("current", "total", "status"),
    ("row_succeeded", 1): ("row", "email", "internal"),
    ("row_failed", 1): ("row", "email", "message"),
    ("row_failed", 2): ("row", "email", "error"),
    ("email_sent", 1): ("row", "email"),
    ("email_failed", 1): ("row", "email", "error"),
    ("succeeded", 1): (),
    ("failed", 1): ("error", "reason"),
    ("cancel_requested", 1): (),
}


#: Where a layout keeps a true/false field as 1/0 (`true` is four bytes, on half the events).
FLAG_AT: dict[tuple[str, int], int] = {("row_succeeded", 1): 2}


def _optional_from(cls: type[Event]) -> int:
    """The index from which every field of `cls` is optional (default None): what may be dropped."""
    fields = attrs.fields(cls)
    first = len(fields)
    while first and fields[first - 1].default is None:
        first -= 1
    return first


# Built at import from the classes above; no I/O.
_OPTIONAL_FROM = {cls.TYPE: _optional_from(cls) for cls in EVENT_CLASSES.values()}

# Each class's values in its current layout's order, spelled out: the append path encodes every
# event, and this reads a third as fast as `getattr` over the names. A test holds it to LAYOUTS.
VALUES_OF: dict[type, Callable[[Any], list[Any]]] = {
    Created: lambda e: [e.owner, e.total, e.label, e.heartbeat_timeout, e.timeout,
                        None if e.labels is None else dict(e.labels)],
    Started: lambda e: [],
    ProgressReported: lambda e: [e.current, e.total, e.status],
    # `_flag` inline: this is the event of most appends
    RowSucceeded: lambda e: [e.row, e.email,
                             int(e.internal) if e.internal.__class__ is bool else e.internal],
    RowFailed: lambda e: [e.row, e.email, e.error],
    EmailSent: lambda e: [e.row, e.email],
    EmailFailed: lambda e: [e.row, e.email, e.error],
    Succeeded: lambda e: [],
    Failed: lambda e: [e.error, e.reason],
    CancelRequested: lambda e: [],
}


def _flag(value: Any) -> Any:
    """True/False as 1/0; any other value as it is (no event the fold accepts has one)."""
    return int(value) if value.__class__ is bool else value


def _unflag(value: Any) -> Any:
    """The inverse of `_flag`."""
    return value == 1 if value.__class__ is int and (value == 0 or value == 1) else value


def _trim(values: list[Any], optional_from: int) -> list[Any]:
    while len(values) > optional_from and values[-1] is None:
        values.pop()
    return values


def encode_data(event: Event) -> str:
    """An event's fields as the positional JSON array the log stores."""
    return orjson.dumps(STORED_ROWS[type(event)][1](event)).decode()


def form_code(kind: str, schema: int) -> int | str:
    """The `type` column's value for an event type at a schema version."""
    code = TYPE_CODES.get(kind)
    if code is None or schema < 1:
        return f"{kind}/{schema}"
    return code + _SCHEMA_STEP * (schema - 1)


def form_of(stored: int | str) -> tuple[str, int]:
    """The event type and schema version a `type` column's value stands for."""
    if stored.__class__ is int:
        steps, code = divmod(stored, _SCHEMA_STEP)
        return TYPE_NAMES.get(code, f"unknown type code {code}"), steps + 1
    kind, _, schema = str(stored).rpartition("/")
    return kind, int(schema) if schema.isdigit() else 0


#: Every layout's `type` value, for the scans that read a row per event.
FORMS: dict[int | str, tuple[str, int]] = {
    form_code(kind, schema): (kind, schema) for kind, schema in LAYOUTS
}


def _stored_values(cls: type[Event]) -> Callable[[Any], list[Any]]:
    """An event's values as the log stores them (`encode_data` before JSON): a class with no
    optional field has nothing to trim, and its `VALUES_OF` is called straight, a frame fewer
    per event on the append path."""
    values_of, optional_from = VALUES_OF[cls], _OPTIONAL_FROM[cls.TYPE]
    if optional_from < len(attrs.fields(cls)):
        return lambda event: _trim(values_of(event), optional_from)
    return values_of


#: How the log stores each event class: its `type` value today, and its values, which
#: `orjson.dumps(...).decode()` makes `encode_data`'s text (the append path does it inline).
STORED_ROWS: dict[type, tuple[int | str, Callable[[Any], list[Any]]]] = {
    cls: (form_code(cls.TYPE, current_version(cls.TYPE)), _stored_values(cls))
    for cls in EVENT_CLASSES.values()
}


def decode_values(kind: str, schema: int, values: list[Any]) -> Event:
    """An event from its positional fields, upcast to today's shape."""
    cls = EVENT_CLASSES.get(kind)
    if cls is None:
        raise UnreadableLog(f"the log holds an event of unknown type {kind!r}")
    names = LAYOUTS.get((kind, schema))
    if names is None or len(values) > len(names):
        newer = schema > current_version(kind)
        raise UnreadableLog(
            f"a stored {kind!r} event at schema version {schema} has {len(values)} fields"
            + ("; this jobtracker is older than the log: upgrade it" if newer else "")
        )
    flag = FLAG_AT.get((kind, schema))
    if flag is not None and flag < len(values):
        values = [*values[:flag], _unflag(values[flag]), *values[flag + 1:]]
    try:
        if schema == current_version(kind):
            return cls(*values)
        return cls(**upcast(kind, schema, dict(zip(names, values, strict=False))))
    except TypeError:
        raise UnreadableLog(
            f"a stored {kind!r} event lacks fields of its schema version {schema}"
        ) from None


def positional_data(kind: str, schema: int, text: str) -> str:
    """The keyed JSON the old layout stored, as this layout's array; the text as it is when it
    does not fit its layout exactly (it is then read as before)."""
    names = LAYOUTS.get((kind, schema))
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if names is None or fields.__class__ is not dict or not fields.keys() <= set(names):
        return text
    # At today's version a missing optional field reads as its default; an older version's
    # fields go through its upcaster, which sees exactly the keys stored.
    current = schema == current_version(kind)
    optional_from = _OPTIONAL_FROM[kind] if current else len(names)
    values = []
    for index, name in enumerate(names):
        if name not in fields and index < optional_from:
            return text
        values.append(fields.get(name))
    flag = FLAG_AT.get((kind, schema))
    if flag is not None:
        if values[flag].__class__ is not bool:
            return text  # an int here would read back as a bool
        values[flag] = _flag(values[flag])
    return orjson.dumps(_trim(values, optional_from)).decode()


@overload
def pack_event_id(event_id: str) -> bytes | str: ...
@overload
def pack_event_id(event_id: str, blob: type[bytearray]) -> bytearray | str: ...


def pack_event_id(event_id: str, blob: type[bytes | bytearray] = bytes) -> bytes | bytearray | str:
    """A canonical UUID's 16 bytes (as `blob`); any other id as its text.

    Canonical: lowercase hex digits with hyphens after the 8th, 12th, 16th and 20th. Checked
    without a regular expression, whose match cost more than all the rest of packing (a twentieth
    of an SDK row's append into SQLite): the hyphens where they go, then 32 digits that
    `fromhex` reads and `hex` writes back the same (so no capitals, and no whitespace, which
    `fromhex` would skip).

    SQLite's writers ask for a `bytearray`: the sqlite3 module binds one as a blob at once, while
    for `bytes` it first looks for an adapter (it builds a key tuple, and raises and clears an
    AttributeError for `__adapt__`), about 1,500 instructions a row, a fifth of what the lean log
    first added to an SDK row's append. A `bytearray` is not hashable: `bytes` for sets and keys.
    """
    if len(event_id) == 36 and event_id[8:24:5] == "----":  # the characters at 8, 13, 18, 23
        digits = event_id.replace("-", "")
        if len(digits) == 32:
            try:
                packed = blob.fromhex(digits)
            except ValueError:
                return event_id
            if packed.hex() == digits:
                return packed
    return event_id


def unpack_event_id(stored: bytes | str) -> str:
    """The inverse of `pack_event_id`."""
    if stored.__class__ is bytes:
        h = stored.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return stored  # type: ignore[return-value]


#: The origin of `at`. SQLite stores an integer within +-2**47 in 6 bytes instead of 8, and 2**47
#: microseconds are 4.46 years: times from mid-2021 to mid-2030 take two bytes less per event,
#: others are stored as exactly (in 8). Frozen (SQLite migration 0007's trigger repeated it). Naive:
#: the log's stamps are all UTC, with the `Z` written and read around them as text.
AT_EPOCH = dt.datetime(2026, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)


def unpack_time(at: int | str) -> str:
    """A stored time as the log's text (ISO 8601, UTC, microseconds, `Z`)."""
    if at.__class__ is int:
        moment = AT_EPOCH + dt.timedelta(microseconds=at)
        return moment.isoformat(timespec="microseconds") + "Z"
    return at  # type: ignore[return-value]


def pack_time(recorded_at: str) -> int | str:
    """The log's time stamp as microseconds since `AT_EPOCH`, when that reads back to the very
    same text; otherwise the text."""
    micros = micros_of(recorded_at)
    if micros is not None and unpack_time(micros) == recorded_at:
        return micros
    return recorded_at


def micros_of(text: str) -> int | None:
    """A UTC time stamp (`...Z`) as microseconds since `AT_EPOCH`; None when it is not one."""
    if not text.endswith("Z"):
        return None
    try:
        moment = dt.datetime.fromisoformat(text[:-1])
    except ValueError:
        return None
    if moment.tzinfo is not None:
        return None
    return (moment - AT_EPOCH) // _MICROSECOND
