"""The PostgreSQL store answers any sequence of appends exactly as the in-memory reference does."""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.events import (
    Created,
    EmailFailed,
    EmailSent,
    Event,
    Failed,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.store import MemoryStore, Store
from jobtracker.store.base import AppendResult
from jobtracker.store.postgres import PostgresStore
from tests.postgres.conftest import OpenStore

rows = st.integers(0, 4)
emails = st.sampled_from(["a@uni.edu", "b@gmail.com"])
events: st.SearchStrategy[Event] = st.one_of(
    st.just(Started()),
    st.builds(ProgressReported, current=st.integers(0, 6), total=st.integers(0, 6)),
    st.builds(RowSucceeded, row=rows, email=emails, internal=st.booleans()),
    st.builds(RowFailed, row=rows, email=emails, error=st.just("Invalid email")),
    st.builds(EmailSent, row=rows, email=emails),
    st.builds(EmailFailed, row=rows, email=emails, error=st.just("bounced")),
    st.just(Succeeded()),
    st.builds(Failed, error=st.just("Achievement not found")),
)
#: A small pool of ids, so re-sends and reused ids both happen.
items = st.builds(NewEvent, event_id=st.sampled_from([f"e{n}" for n in range(8)]), event=events)
batches = st.lists(st.lists(items, min_size=0, max_size=4), min_size=1, max_size=6)
totals = st.one_of(st.none(), st.integers(0, 5))

_jobs = itertools.count()


async def outcome(store: Store, job_id: str, batch: list[NewEvent]) -> object:
    try:
        result: AppendResult = await store.append(job_id, batch)
    except JobtrackerError as exc:
        return type(exc).__name__, exc.detail
    return result


async def history(store: Store, job_id: str) -> list[tuple[int, str, Event]]:
    """The job's events after `created` (whose id the store makes up)."""
    return [(e.version, e.event_id, e.event) for e in await store.read_job_events(job_id)][1:]


@pytest.fixture
async def postgres(open_store: OpenStore) -> PostgresStore:
    """One store for every example (each example uses jobs and event ids of its own)."""
    return await open_store(pool_size=2)


#: Examples per run; raise it (e.g. 2000) for a longer hunt.
EXAMPLES = int(os.environ.get("JOBTRACKER_PG_EXAMPLES", "40"))


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=batches, total=totals, together=st.booleans())
async def test_postgres_store_matches_the_memory_store(
    postgres: PostgresStore, batches: list[list[NewEvent]], total: int | None, together: bool
) -> None:
    """Same batches, same answers (results and errors), same projection, same history.

    `together` sends every batch at once, so they are committed as one group, in order.
    """
    memory = MemoryStore()
    # Event ids are global: each example gets its own prefix so examples never share them.
    n = next(_jobs)
    job_id = f"job-{n}"
    batches = [[NewEvent(f"{n}-{i.event_id}", i.event) for i in batch] for batch in batches]
    for store in (memory, postgres):
        await store.create_job(job_id, Created(owner="key_a", total=total))
    expected_outcomes = [await outcome(memory, job_id, batch) for batch in batches]
    if together:
        outcomes = await asyncio.gather(*(outcome(postgres, job_id, b) for b in batches))
    else:
        outcomes = [await outcome(postgres, job_id, batch) for batch in batches]
    assert outcomes == expected_outcomes
    assert await history(postgres, job_id) == await history(memory, job_id)
    expected = await memory.get_job(job_id, 100)
    actual = await postgres.get_job(job_id, 100)
    assert actual is not None
    assert expected is not None
    assert actual.state == expected.state
    if expected.state.status.value == "SUCCESS":
        assert actual.errors == expected.errors
