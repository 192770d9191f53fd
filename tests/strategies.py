"""Hypothesis strategies: valid event histories for one job."""

from __future__ import annotations

import itertools

from hypothesis import strategies as st

from jobtracker.domain.events import (
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

emails = st.sampled_from(["ana@uni.edu", "bo@gmail.com", "invalido@test", "x@y.org"])
texts = st.text(st.characters(blacklist_characters="\x00"), min_size=1, max_size=20)


@st.composite
def progress_events(draw: st.DrawFn) -> ProgressReported:
    total = draw(st.integers(0, 100))
    current = draw(st.integers(0, total))
    status = draw(st.none() | st.text(st.characters(blacklist_characters="\x00"), max_size=20))
    return ProgressReported(current=current, total=total, status=status)


@st.composite
def row_event(draw: st.DrawFn, row: int) -> Event:
    if draw(st.booleans()):
        return RowSucceeded(row=row, email=draw(emails), internal=draw(st.booleans()))
    return RowFailed(row=row, email=draw(emails), error=draw(texts))


@st.composite
def histories(draw: st.DrawFn, max_rows: int = 30) -> list[Event]:
    """A valid sequence of worker events: each row and each e-mail reported once, in any order."""
    rows = draw(st.lists(st.integers(0, 1000), unique=True, max_size=max_rows))
    mailed = draw(st.lists(st.sampled_from(rows), unique=True) if rows else st.just([]))
    events: list[Event] = [draw(row_event(row)) for row in rows]
    for row in mailed:
        email = draw(emails)
        events.append(
            EmailSent(row, email) if draw(st.booleans()) else EmailFailed(row, email, draw(texts))
        )
    events += draw(st.lists(st.just(Started()) | progress_events(), max_size=5))
    events = draw(st.permutations(events))
    ending = draw(st.sampled_from(["open", "succeeded", "failed"]))
    if ending == "succeeded":
        events.append(Succeeded())
    elif ending == "failed":
        events.append(Failed(error=draw(texts)))
    return events


@st.composite
def chunked(draw: st.DrawFn, events: list[Event]) -> list[list[Event]]:
    """The same events cut into consecutive batches at random points."""
    cuts = sorted(draw(st.sets(st.integers(1, max(len(events) - 1, 1)), max_size=len(events))))
    bounds = [0, *[c for c in cuts if c < len(events)], len(events)]
    return [events[a:b] for a, b in itertools.pairwise(bounds) if a < b]
