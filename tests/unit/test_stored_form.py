"""SQLite's lean stored form (`domain/stored.py`): every event, id and time reads back as itself."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobtracker.domain.codec import decode_stored, encode_fields, stored_version
from jobtracker.domain.errors import UnreadableLog
from jobtracker.domain.events import (
    EVENT_CLASSES,
    FAILURE_REASONS,
    MAX_INT,
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
from jobtracker.domain.stored import (
    LAYOUTS,
    STORED_ROWS,
    TYPE_CODES,
    VALUES_OF,
    encode_data,
    form_code,
    form_of,
    pack_event_id,
    pack_time,
    positional_data,
    unpack_event_id,
    unpack_time,
)
from jobtracker.domain.upcast import current_version

#: Text the codec takes: no NUL, no lone surrogate (JSON cannot carry one; no layout stores it).
CHARACTERS = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
TEXT = st.text(CHARACTERS, min_size=1, max_size=30)
OPTIONAL_TEXT = st.none() | st.text(CHARACTERS, max_size=30)
COUNT = st.integers(0, MAX_INT)
OPTIONAL_COUNT = st.none() | COUNT
LABELS = st.none() | st.dictionaries(st.from_regex(r"[a-z0-9_.-]{1,63}", fullmatch=True),
                                     TEXT, max_size=16)
#: Every event the codec accepts, every field over its range.
EVENTS = st.one_of(
    st.builds(Created, owner=TEXT, total=OPTIONAL_COUNT, label=OPTIONAL_TEXT,
              heartbeat_timeout=st.none() | st.integers(5, 86_400),
              timeout=st.none() | st.integers(1, 31_536_000), labels=LABELS),
    st.just(Started()),
    st.builds(ProgressReported, current=COUNT, total=COUNT, status=OPTIONAL_TEXT),
    st.builds(RowSucceeded, row=COUNT, email=TEXT, internal=st.booleans()),
    st.builds(RowFailed, row=COUNT, email=TEXT, error=TEXT),
    st.builds(EmailSent, row=COUNT, email=TEXT),
    st.builds(EmailFailed, row=COUNT, email=TEXT, error=TEXT),
    st.just(Succeeded()),
    st.builds(Failed, error=TEXT, reason=st.none() | st.sampled_from(sorted(FAILURE_REASONS))),
    st.just(CancelRequested()),
)


@given(EVENTS)
def test_every_event_reads_back_from_its_stored_form(event: Event) -> None:
    """Written positionally, read back: the same event; and the old layout's JSON of it,
    converted by the migration, is the very same stored text."""
    form, values = STORED_ROWS[type(event)]
    data = orjson.dumps(values(event)).decode()
    assert data == encode_data(event)
    assert orjson.loads(data).__class__ is list
    assert decode_stored(*form_of(form), data) == event
    assert positional_data(event.TYPE, stored_version(event), encode_fields(event)) == data


def test_values_follow_the_current_layouts_and_the_classes() -> None:
    """`VALUES_OF` is spelled out per class: it must give the layout's fields in its order, and
    the layout must be the class's own field order (read back positionally)."""
    for cls in EVENT_CLASSES.values():
        names = LAYOUTS[cls.TYPE, current_version(cls.TYPE)]
        assert names == tuple(f.name for f in attrs.fields(cls))
    event = Created(owner="o", total=1, label="l", heartbeat_timeout=5, timeout=6,
                    labels={"a": "b"})
    assert VALUES_OF[Created](event) == ["o", 1, "l", 5, 6, {"a": "b"}]


def test_type_codes_are_frozen() -> None:
    """A stored code means one type and schema version forever; an unknown type stays text."""
    assert TYPE_CODES == {"created": 1, "started": 2, "progress": 3, "row_succeeded": 4,
                          "row_failed": 5, "email_sent": 6, "email_failed": 7, "succeeded": 8,
                          "failed": 9, "cancel_requested": 10}
    assert [form_code("row_failed", 1), form_code("row_failed", 2)] == [5, 21]
    for kind, schema in [*LAYOUTS, ("row_failed", 9), ("teleported", 1), ("teleported", 3)]:
        assert form_of(form_code(kind, schema)) == (kind, schema)
    assert form_code("teleported", 3) == "teleported/3"


def test_trailing_unset_fields_take_no_bytes() -> None:
    """The issue's payload, `row_succeeded`, is its three values; unset optional fields at the
    end are dropped, and a set one keeps the unset ones before it."""
    assert encode_data(RowSucceeded(12, "ana@uni.edu", True)) == '[12,"ana@uni.edu",1]'
    assert encode_data(Created(owner="k")) == '["k"]'
    assert encode_data(Created(owner="k", timeout=60)) == '["k",null,null,null,60]'
    assert encode_data(ProgressReported(1, 2)) == "[1,2]"


@given(st.uuids())
def test_a_canonical_uuid_is_16_bytes_and_reads_back(value: uuid.UUID) -> None:
    """The SDK's ids (any UUID in lowercase, hyphenated) take 16 bytes and read back exactly."""
    packed = pack_event_id(str(value))
    assert packed == value.bytes
    assert unpack_event_id(packed) == str(value)


@given(st.uuids().map(lambda u: str(u).upper()) | TEXT)
def test_any_other_id_stays_text(event_id: str) -> None:
    """An id in capitals, or any client string, is kept as given: never equal to a packed id."""
    if event_id == event_id.lower() and len(event_id) == 36:
        try:
            if str(uuid.UUID(event_id)) == event_id:
                return  # a canonical UUID the text strategy happened to draw
        except ValueError:
            pass
    assert pack_event_id(event_id) == event_id
    assert unpack_event_id(event_id) == event_id


#: What a canonical id is, spelled as a pattern (the store checks it without one).
CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@given(st.uuids(), st.integers(0, 35), st.characters() | st.sampled_from(" \t\n-ABCDEFabcdef0"))
def test_an_id_one_character_off_a_canonical_uuid_is_packed_only_if_still_canonical(
    value: uuid.UUID, at: int, char: str
) -> None:
    """A capital, a space, a hyphen moved, any other character in place of one of a UUID's:
    packed only when the result is still a canonical UUID, kept as text otherwise."""
    event_id = str(value)[:at] + char + str(value)[at + 1 :]
    if CANONICAL.fullmatch(event_id):
        assert pack_event_id(event_id) == uuid.UUID(event_id).bytes
    else:
        assert pack_event_id(event_id) == event_id


@given(st.uuids(), st.integers(0, 35), st.integers(0, 35))
def test_a_uuid_with_a_hyphen_moved_stays_text(value: uuid.UUID, i: int, j: int) -> None:
    """Two of a UUID's characters swapped (a hyphen among them moves it): 32 digits and four
    hyphens still, packed only if the result is canonical."""
    chars = list(str(value))
    chars[i], chars[j] = chars[j], chars[i]
    event_id = "".join(chars)
    expected = uuid.UUID(event_id).bytes if CANONICAL.fullmatch(event_id) else event_id
    assert pack_event_id(event_id) == expected


@given(st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9999, 1, 1)))
def test_the_log_times_are_microseconds_and_read_back(moment: dt.datetime) -> None:
    """`recorded_at` as the store writes it becomes an integer and reads back to the character."""
    text = moment.isoformat(timespec="microseconds") + "Z"
    packed = pack_time(text)
    assert packed.__class__ is int
    assert unpack_time(packed) == text


@pytest.mark.parametrize("text", ["2026-11-01", "2026-11-01T00:00:00Z", "2026-11-01T00:00:00.5Z",
                                  "2026-11-01T00:00:00.000000+00:00", "yesterday"])
def test_a_time_that_would_not_read_back_exactly_stays_text(text: str) -> None:
    """Old files may hold other spellings: they are kept as they are."""
    assert pack_time(text) == text
    assert unpack_time(text) == text


@pytest.mark.parametrize(("kind", "schema", "keyed", "positional"), [
    ("row_failed", 1, '{"row":1,"email":"a@b.c","message":"old"}', '[1,"a@b.c","old"]'),
    ("row_failed", 1, '{"row":1,"email":"a@b.c","error":"v1, new key"}', None),
    ("row_succeeded", 1, '{"row":1,"email":"a@b.c"}', None),
    ("row_succeeded", 1, '{"row":1,"email":"a@b.c","internal":true,"x":1}', None),
    ("row_succeeded", 1, '{"row":1,"email":"a@b.c","internal":1}', None),
    ("row_succeeded", 1, '{"row":1,"email":"a@b.c","internal":false}', '[1,"a@b.c",0]'),
    ("created", 1, '{"label":null,"owner":"k","total":null}', '["k"]'),
    ("created", 1, '{"labels":{"a":"b"},"owner":"k"}', '["k",null,null,null,null,{"a":"b"}]'),
    ("teleported", 1, "{}", None),
    ("progress", 1, "not json", None),
])
def test_the_migration_keeps_what_does_not_fit_a_layout_as_it_was(
    kind: str, schema: int, keyed: str, positional: str | None
) -> None:
    """Old JSON that fits its layout becomes positional and reads back the same; anything else
    (another shape, an unknown type, not JSON) is copied as it is and read as before."""
    converted = positional_data(kind, schema, keyed)
    assert converted == (positional or keyed)
    if positional is not None:
        assert decode_stored(kind, schema, converted) == decode_stored(kind, schema, keyed)


@pytest.mark.parametrize(("kind", "schema", "data"), [
    ("row_succeeded", 1, "[1]"), ("row_succeeded", 1, '[1,"a",true,4]'), ("row_failed", 3, "[]"),
    ("teleported", 1, "[]"),
])
def test_a_positional_row_that_does_not_fit_is_unreadable(
    kind: str, schema: int, data: str
) -> None:
    """Too few or too many values, a schema version this release lacks, an unknown type: the
    log is named unreadable, never misread."""
    with pytest.raises(UnreadableLog):
        decode_stored(kind, schema, data)
