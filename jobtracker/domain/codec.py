"""The one cattrs converter: events to and from their JSON wire form, strictly.

Strict means a JSON `"5"` is not an int and `1` is not a bool: a worker in another language that
sends the wrong type hears about it instead of having it silently coerced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from jobtracker.domain.errors import InvalidInput, MalformedRequest, UnreadableLog
from jobtracker.domain.events import (
    EVENT_CLASSES,
    MAX_EVENT_ID,
    MAX_INT,
    MAX_LABEL,
    WORKER_TYPES,
    CancelRequested,
    Created,
    EmailFailed,
    EmailSent,
    Event,
    Failed,
    LabelPairs,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    check_count,
    check_event_id,
    check_fields,
    check_job_limits,
    check_labels,
    check_text,
    is_valid_job_id,
    label_pairs,
    new_event_id,
)
from jobtracker.domain.stored import decode_values
from jobtracker.domain.upcast import current_version, upcast

ENVELOPE_FIELDS = frozenset({"type", "event_id"})


def _strict(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _: Any) -> Any:
        # bool is a subclass of int in Python; JSON true is not a row number.
        if type(value) is not kind:
            raise TypeError(f"must be {name}")
        return value

    return structure


def _strict_int(value: Any, _: Any) -> int:
    # JSON has one number type: 50.0 is the integer 50 (JSON Schema agrees), 50.5 and "50" are not.
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer() and abs(value) <= MAX_INT:
        return int(value)
    raise TypeError("must be an integer")


@cache
def converter() -> cattrs.Converter:
    """The project's converter, built once on first use (nothing runs at import)."""
    conv = cattrs.Converter(forbid_extra_keys=True)
    conv.register_structure_hook(int, _strict_int)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(bool, _strict(bool, "true or false"))
    # Labels travel as a JSON object and live in the domain as sorted pairs (hashable).
    conv.register_structure_hook_func(lambda t: t == LabelPairs, _structure_labels)
    conv.register_unstructure_hook_func(lambda t: t == LabelPairs, dict)
    return conv


def _structure_labels(value: Any, _: Any) -> LabelPairs | None:
    if not isinstance(value, dict):
        raise TypeError("must be an object of text values")
    return label_pairs(value)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return "is required"
    if isinstance(exc, ForbiddenExtraKeysError):
        return "unknown field"
    return str(exc)


def _first_problem(exc: ClassValidationError, where: str) -> str:
    """Turn cattrs' nested error into 'events[3].row: must be an integer'."""
    problems = cattrs.transform_error(exc, path="", format_exception=lambda e, _: _describe(e))
    message, _, path = problems[0].partition(" @ ")
    if message == "unknown field":
        extra = sorted(next(e for e in exc.exceptions if isinstance(e, ForbiddenExtraKeysError))
                       .extra_fields)
        return f"{where}{extra[0]}: unknown field"
    return f"{where}{path.lstrip('.')}: {message}"


def decode_event(data: Any, where: str = "") -> NewEvent:
    """One wire event (a parsed JSON object) to a `NewEvent`; `InvalidInput` names the field."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{where.rstrip('.') or 'event'}: must be a JSON object")
    kind = data.get("type")
    if kind is None:
        raise InvalidInput(f"{where}type: is required")
    if not isinstance(kind, str) or kind not in WORKER_TYPES:
        allowed = ", ".join(sorted(WORKER_TYPES))
        raise InvalidInput(f"{where}type: unknown event type {kind!r}; expected one of {allowed}")
    event_id = data.get("event_id")
    if event_id is None:
        event_id = new_event_id()
    elif not isinstance(event_id, str):
        raise InvalidInput(f"{where}event_id: must be a string")
    check_event_id(f"{where}event_id", event_id)
    fields = {k: v for k, v in data.items() if k not in ENVELOPE_FIELDS}
    try:
        event = converter().structure(fields, EVENT_CLASSES[kind])
    except ClassValidationError as exc:
        raise InvalidInput(_first_problem(exc, where)) from None
    check_fields(event, where)
    return NewEvent(event_id=event_id, event=event)


def decode_events(data: Any) -> list[NewEvent]:
    """A wire batch (a JSON array of events) to `NewEvent`s; all valid or `InvalidInput`."""
    if not isinstance(data, list):
        raise MalformedRequest("Body must be a JSON array of events")
    return [decode_event(item, f"events[{i}].") for i, item in enumerate(data)]


def event_fields(event: Event) -> dict[str, Any]:
    """An event's own fields (no type, no envelope), as stored in the log."""
    return FIELDS_OF[type(event)](event)


def event_from_fields(kind: str, fields: dict[str, Any]) -> Event:
    """Rebuild an event from its stored type and fields."""
    event: Event = converter().structure(fields, EVENT_CLASSES[kind])
    return event


def _without_none(fields: dict[str, Any], optional: tuple[str, ...]) -> dict[str, Any]:
    for name in optional:
        if fields[name] is None:
            del fields[name]
    return fields


def encode_fields(event: Event) -> str:
    """An event's fields as canonical JSON text (sorted keys), the form the log stores."""
    return orjson.dumps(event_fields(event)).decode()


# Each class's fields spelled out, keys in sorted order (the log's canonical JSON). Events are flat
# classes of str, int, bool and None, which unstructure to themselves, so this is what the
# converter would give, read at a third of the cost of looping over the names with `getattr`: a
# store encodes every appended event. The encoding test holds it to the converter for every class.
FIELDS_OF: dict[type, Callable[[Any], dict[str, Any]]] = {
    # Fields added after the first release are stored only when set, so the bodies of events
    # that do not use them (and every older event) keep their form.
    Created: lambda e: {"label": e.label, "owner": e.owner, "total": e.total}
    if e.heartbeat_timeout is None and e.timeout is None and e.labels is None
    else _without_none({"heartbeat_timeout": e.heartbeat_timeout, "label": e.label,
                        "labels": None if e.labels is None else dict(e.labels),
                        "owner": e.owner, "timeout": e.timeout, "total": e.total},
                       ("heartbeat_timeout", "labels", "timeout")),
    Started: lambda e: {},
    ProgressReported: lambda e: {"current": e.current, "status": e.status, "total": e.total},
    RowSucceeded: lambda e: {"email": e.email, "internal": e.internal, "row": e.row},
    RowFailed: lambda e: {"email": e.email, "error": e.error, "row": e.row},
    EmailSent: lambda e: {"email": e.email, "row": e.row},
    EmailFailed: lambda e: {"email": e.email, "error": e.error, "row": e.row},
    Succeeded: lambda e: {},
    Failed: lambda e: {"error": e.error} if e.reason is None
    else {"error": e.error, "reason": e.reason},
    CancelRequested: lambda e: {},
}

#: How the log stores each event class: its type, its schema version today, its fields.
STORED_FORMS: dict[type, tuple[str, int, Callable[[Any], dict[str, Any]]]] = {
    cls: (cls.TYPE, current_version(cls.TYPE), FIELDS_OF[cls]) for cls in EVENT_CLASSES.values()
}


def decode_fields(kind: str, text: str) -> Event:
    """The inverse of `encode_fields`."""
    return event_from_fields(kind, orjson.loads(text))


def stored_version(event: Event) -> int:
    """The schema version an event's fields are stored with today."""
    return current_version(event.TYPE)


def decode_stored(kind: str, schema_version: int, text: str) -> Event:
    """An event as a log stores it (a JSON object, or SQLite's positional array), upcast to
    today's shape.

    The log only holds events that passed `decode_event` when they were appended, so they are built
    directly instead of through the strict converter.
    """
    fields = orjson.loads(text)
    if fields.__class__ is list:
        return decode_values(kind, schema_version, fields)
    if schema_version != current_version(kind):
        fields = upcast(kind, schema_version, fields)
    cls = EVENT_CLASSES.get(kind)
    if cls is None:
        raise UnreadableLog(f"the log holds an event of unknown type {kind!r}")
    try:
        return cls(**fields)
    except TypeError:
        raise UnreadableLog(
            f"a stored {kind!r} event has fields {sorted(fields)}, not {kind!r}'s"
        ) from None


#: A stored event row as the log reads it: (job_id, version, position, type, schema_version, data).
StoredRow = tuple[str, int, int, str, int, str]


def encode_event(item: NewEvent) -> dict[str, Any]:
    """A `NewEvent` in its wire form (for the SDK's HTTP transport)."""
    return {"type": item.event.TYPE, "event_id": item.event_id, **event_fields(item.event)}


def parse_json(body: bytes) -> Any:
    """Parse a request body, or raise `MalformedRequest` (an object with a key twice included)."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedRequest("Body is not valid JSON") from None
    if _may_repeat_a_key(body, value):
        _refuse_repeated_keys(body)
    return value


def _may_repeat_a_key(body: bytes, value: Any) -> bool:
    """False when no object in `body` has a key twice; True when one may (then look closely).

    orjson keeps the last of a repeated key without a word. Outside strings every colon of valid
    JSON ends a key, and orjson writes each colon inside a string as it is, so writing the parsed
    value again loses one colon per key it dropped: counting colons on both sides costs two byte
    scans and an encode, in C. Only a colon escaped as \\u003a could even the count out, so a
    body with any \\u0030-\\u003f escape (orjson and Python never write one) is looked at closely.
    """
    if b"\\" in body and b"\\u003" in body:
        return True
    try:
        return orjson.dumps(value).count(b":") != body.count(b":")
    except orjson.JSONEncodeError:  # nested deeper than orjson writes: look closely
        return True


def _refuse_repeated_keys(body: bytes) -> None:
    """Read `body` again, slowly and exactly, and refuse the first key an object has twice."""

    def distinct(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedRequest(f"Body has the key {key[:40]!r} twice in one JSON object")
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=distinct)
    except RecursionError:
        raise MalformedRequest("Body is nested too deeply") from None
    except ValueError:  # what orjson read and the json module does not: not JSON we take
        raise MalformedRequest("Body is not valid JSON") from None


def dumps(value: Any) -> bytes:
    """Encode a response body."""
    return orjson.dumps(value)


@attrs.frozen
class CreateJobRequest:
    """The body of `POST /api/v1/jobs`; every field optional."""

    job_id: str | None = None
    total: int | None = None
    label: str | None = None
    #: The id of the owner key the job is for; only a worker key may name one.
    owner: str | None = None
    #: Seconds a running job may go without a report (job control); the server's default if None.
    heartbeat_timeout: int | None = None
    #: Seconds from creation the job may take to finish; no limit if None.
    timeout: int | None = None
    #: Labels to find the job by (CONTRACT.md, "Inventory"); checked by `check_labels`.
    labels: Any = None


def decode_create_request(data: Any) -> CreateJobRequest:
    """Read and check a job-creation body; `InvalidInput` names the field."""
    if not isinstance(data, dict):
        raise MalformedRequest("Body must be a JSON object")
    try:
        request = converter().structure(data, CreateJobRequest)
    except ClassValidationError as exc:
        raise InvalidInput(_first_problem(exc, "")) from None
    if request.job_id is not None and not is_valid_job_id(request.job_id):
        raise InvalidInput(
            "job_id: must be 1-128 characters of A-Z a-z 0-9 . _ : -, and not . or .."
        )
    check_count("total", request.total)
    check_text("label", request.label, MAX_LABEL, required=False)
    check_text("owner", request.owner, MAX_EVENT_ID)
    check_job_limits(request.heartbeat_timeout, request.timeout)
    check_labels("labels", request.labels)
    return request
