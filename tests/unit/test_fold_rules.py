"""The fold's fast paths say exactly what the plain rules say."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobtracker.domain.codec import converter, decode_stored, encode_fields, stored_version
from jobtracker.domain.errors import InvalidInput, JobtrackerError, UnreadableLog
from jobtracker.domain.events import (
    EVENT_CLASSES,
    MAX_INT,
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
    check_fields,
    fields_ok,
)
from jobtracker.domain.logfold import RowMarks
from jobtracker.domain.projection import fold, fold_batch, start
from jobtracker.domain.state import RowMark
from jobtracker.domain.upcast import upcast

NUMBERS = st.one_of(st.integers(-3, 10), st.sampled_from([MAX_INT, MAX_INT + 1]))
TEXTS = st.one_of(st.sampled_from(["", "a@b.c", "nul\x00", "x" * 321, "y" * 4001]), st.text())
ANY_EVENT = st.one_of(
    st.builds(Created, owner=TEXTS, total=st.none() | NUMBERS, label=st.none() | TEXTS),
    st.builds(ProgressReported, current=NUMBERS, total=NUMBERS, status=st.none() | TEXTS),
    st.builds(RowSucceeded, row=NUMBERS, email=TEXTS, internal=st.booleans()),
    st.builds(RowFailed, row=NUMBERS, email=TEXTS, error=TEXTS),
    st.builds(EmailSent, row=NUMBERS, email=TEXTS),
    st.builds(EmailFailed, row=NUMBERS, email=TEXTS, error=TEXTS),
    st.builds(Failed, error=TEXTS),
    st.just(Started()),
    st.just(Succeeded()),
)
VALID_EVENTS = st.lists(
    st.one_of(
        st.just(Started()),
        st.builds(ProgressReported, current=st.integers(0, 3), total=st.integers(3, 5)),
        st.builds(RowSucceeded, row=st.integers(0, 5), email=st.just("a@b.c"),
                  internal=st.booleans()),
        st.builds(RowFailed, row=st.integers(0, 5), email=st.just("a@b.c"), error=st.just("e")),
        st.builds(EmailSent, row=st.integers(0, 5), email=st.just("a@b.c")),
        st.just(Succeeded()),
    ),
    max_size=12,
)


def rules_pass(event: Event) -> bool:
    try:
        check_fields(event)
    except InvalidInput:
        return False
    return True


@given(ANY_EVENT)
def test_fast_field_check_agrees_with_the_rules(event: Event) -> None:
    """`fields_ok` is True exactly when `check_fields` accepts, before and after cattrs runs."""
    assert fields_ok(event) == rules_pass(event)
    for cls in EVENT_CLASSES.values():
        attrs.resolve_types(cls)
    assert fields_ok(event) == rules_pass(event)


def outcome(call: object) -> object:
    try:
        return call()  # type: ignore[operator]
    except JobtrackerError as exc:
        return (type(exc), exc.detail)


@given(VALID_EVENTS, st.sets(st.builds(RowMark, st.integers(0, 5), st.sampled_from(
    ["outcome", "email"]))))
def test_folding_one_by_one_equals_folding_the_batch(
    events: list[Event], recorded: set[RowMark]
) -> None:
    """A batch folds to the same state, marks and errors as its events folded one at a time."""
    state = start("job", Created(owner="k", total=4))

    def one_by_one() -> object:
        current, marks, errors, seen = state, [], [], set(recorded)
        for n, event in enumerate(events):
            step = fold(current, event, seen, where=f"events[{n}].")
            current = step.state
            if step.mark is not None:
                marks.append(step.mark)
                seen.add(step.mark)
            if step.row_error is not None:
                errors.append(step.row_error)
        return current, tuple(marks), tuple(errors)

    def batch() -> object:
        folded = fold_batch(state, events, recorded)
        return folded.state, folded.marks, folded.row_errors

    assert outcome(one_by_one) == outcome(batch)


@given(st.lists(st.builds(RowMark, st.one_of(st.integers(0, 200), st.integers(2**26, 2**53)),
                          st.sampled_from(["outcome", "email"]))))
def test_row_marks_behave_like_a_set(marks: list[RowMark]) -> None:
    """The compact mark store answers membership, size and iteration like a plain set."""
    compact, plain = RowMarks(), set()
    for mark in marks:
        if mark not in plain:
            compact.add(mark)
            plain.add(mark)
    assert len(compact) == len(plain)
    assert set(compact) == plain
    probes = [*marks, RowMark(201, "outcome"), RowMark(2**27, "email")]
    assert [p in compact for p in probes] == [p in plain for p in probes]


def test_old_row_failed_shape_is_upcast_and_todays_is_untouched() -> None:
    """v1 stored the error text as `message`; reading it yields today's `error`."""
    old = {"row": 1, "email": "a@b.c", "message": "boom"}
    assert upcast("row_failed", 1, old) == {"row": 1, "email": "a@b.c", "error": "boom"}
    assert decode_stored("row_failed", 1, '{"row":1,"email":"a@b.c","message":"boom"}') == (
        RowFailed(1, "a@b.c", "boom")
    )
    today = RowFailed(2, "a@b.c", "bad")
    assert stored_version(today) == 2
    assert decode_stored("row_failed", 2, encode_fields(today)) == today
    assert decode_stored("row_failed", 1, encode_fields(today)) == today


@pytest.mark.parametrize(
    ("kind", "version", "text", "says"),
    [
        ("row_failed", 3, '{"row":1}', "upgrade it"),
        ("started", 0, "{}", "no upcaster"),
        ("teleported", 1, "{}", "unknown type"),
        ("started", 1, '{"extra": 1}', "fields"),
    ],
)
def test_unreadable_stored_event_is_named(kind: str, version: int, text: str, says: str) -> None:
    """An event this version cannot read is a clear error, not a crash."""
    with pytest.raises(UnreadableLog, match=says):
        decode_stored(kind, version, text)


def test_stored_event_decodes_like_the_strict_converter() -> None:
    """The fast decoding of stored rows builds the very objects the strict converter builds."""
    for event in (RowSucceeded(3, "a@b.c", True), ProgressReported(1, 2), Created("k", 5, "L")):
        strict = converter().structure(converter().unstructure(event), type(event))
        assert decode_stored(event.TYPE, stored_version(event), encode_fields(event)) == strict
