"""The wire form of events: strict types, and errors that name the event and the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobtracker.domain.codec import (
    decode_create_request,
    decode_events,
    encode_event,
    parse_json,
)
from jobtracker.domain.errors import InvalidInput, MalformedRequest
from jobtracker.domain.events import NewEvent, RowSucceeded


def test_wire_event_round_trips() -> None:
    """What the SDK sends is what the server reads back."""
    item = NewEvent("e-1", RowSucceeded(row=3, email="ana@uni.edu", internal=True))
    assert decode_events([encode_event(item)]) == [item]


def test_missing_event_id_gets_one_assigned() -> None:
    """An event without `event_id` still gets an idempotency key."""
    [item] = decode_events([{"type": "started"}])
    assert len(item.event_id) == 36


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        ({"type": "row_succeeded", "row": "1", "email": "a", "internal": True}, "row: must be"),
        ({"type": "row_succeeded", "row": 1, "email": "a", "internal": 1}, "internal: must be"),
        ({"type": "row_succeeded", "row": True, "email": "a", "internal": True}, "row: must be"),
        ({"type": "row_succeeded", "row": 1, "email": "a"}, "internal: is required"),
        ({"type": "row_failed", "row": 1, "email": "a", "error": "e", "x": 1}, "x: unknown field"),
        ({"type": "teleported"}, "type: unknown event type 'teleported'"),
        ({"type": "created", "owner": "k"}, "type: unknown event type 'created'"),
        ({"row": 1}, "type: is required"),
        ({"type": "started", "event_id": 7}, "event_id: must be a string"),
        ({"type": "started", "event_id": "x" * 129}, "event_id: longer than 128"),
        ({"type": "progress", "current": 9, "total": 3}, "current: 9 is greater than total 3"),
        ({"type": "progress", "current": -1, "total": 3}, "current: must be >= 0"),
    ],
)
def test_bad_events_are_refused_naming_index_and_field(event: dict[str, Any], detail: str) -> None:
    """A worker learns which event of its batch is wrong and why."""
    with pytest.raises(InvalidInput) as caught:
        decode_events([{"type": "started"}, event])
    assert caught.value.detail.startswith("events[1].")
    assert detail in caught.value.detail


@pytest.mark.parametrize("body", [{"type": "started"}, "started", 3, None])
def test_a_batch_must_be_an_array(body: Any) -> None:
    """The events endpoint takes a JSON array."""
    with pytest.raises(MalformedRequest, match="JSON array"):
        decode_events(body)


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"job_id": "has space"}, "job_id: must be 1-128 characters"),
        ({"job_id": ""}, "job_id: must be 1-128 characters"),
        ({"total": -1}, "total: must be >= 0"),
        ({"total": 1.5}, "total: must be an integer"),
        ({"total": "3"}, "total: must be an integer"),
        ({"label": "x" * 201}, "label: longer than 200"),
        ({"owners": "me"}, "owners: unknown field"),
        ({"owner": ""}, "owner: must not be empty"),
        ({"owner": "k" * 129}, "owner: longer than 128"),
    ],
)
def test_bad_creation_bodies_name_the_field(body: dict[str, Any], detail: str) -> None:
    """Job creation says which field is wrong."""
    with pytest.raises(InvalidInput, match=detail):
        decode_create_request(body)


def test_an_integral_json_number_is_an_integer() -> None:
    """`50.0` is the number 50 in JSON, as JSON Schema says; `50.5` is refused."""
    [item] = decode_events([{"type": "progress", "current": 25.0, "total": 50}])
    assert item.event.current == 25  # type: ignore[union-attr]
    assert type(item.event.current) is int  # type: ignore[union-attr]


#: Keys and texts that look like JSON structure, so only a real parser tells them apart.
_TRICKY_TEXT = st.sampled_from(["", "a", ":", "a:", "::", '"', '":', "\\", "{,}", "[ "])


def _json_text(draw: Callable[[Any], Any], text: str) -> str:
    encoded = orjson.dumps(text).decode()
    # A colon inside a string may equally be written as the escape \u003a.
    return encoded.replace(":", "\\u003a") if draw(st.booleans()) else encoded


def _json_value(draw: Callable[[Any], Any], depth: int = 0) -> tuple[str, bool]:
    """JSON text (objects may repeat keys) and whether some object in it does."""
    kinds = ["text", "number", "list", "object"] if depth < 3 else ["text", "number"]
    kind = draw(st.sampled_from(kinds))
    if kind == "text":
        return _json_text(draw, draw(_TRICKY_TEXT)), False
    if kind == "number":
        return str(draw(st.integers(-5, 5))), False
    if kind == "list":
        items = [_json_value(draw, depth + 1) for _ in range(draw(st.integers(0, 3)))]
        return "[" + ",".join(t for t, _ in items) + "]", any(r for _, r in items)
    keys = draw(st.lists(_TRICKY_TEXT, max_size=4))
    colon = draw(st.sampled_from([":", " : ", ":\n"]))
    members = [(_json_text(draw, key), *_json_value(draw, depth + 1)) for key in keys]
    text = ",".join(key + colon + value for key, value, _ in members)
    return "{" + text + "}", len(set(keys)) != len(keys) or any(r for _, _, r in members)


@given(st.data())
def test_a_key_given_twice_in_any_object_is_refused_and_nothing_else_is(
    data: st.DataObject,
) -> None:
    """A repeated key is found at any depth, whatever colons, quotes or escapes the text holds."""
    text, repeats = _json_value(data.draw)
    if repeats:
        with pytest.raises(MalformedRequest, match="twice in one JSON object"):
            parse_json(text.encode())
    else:
        assert parse_json(text.encode()) == json.loads(text)


def test_a_body_nested_deeper_than_the_duplicate_check_reads_is_refused() -> None:
    """JSON nested a thousand deep, which orjson reads but cannot check, is refused as such."""
    with pytest.raises(MalformedRequest, match="nested too deeply"):
        parse_json(b"[" * 1000 + b"]" * 1000)
