"""Replay on every store: the live projection is what the log folds into, and replay proves it."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobtracker.domain.errors import Conflict, InvalidInput, JobNotFound
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
from jobtracker.domain.projection import replay as fold_history
from jobtracker.domain.state import Status
from jobtracker.store import Store, replay
from jobtracker.store.rebuild import Rebuildable
from tests.conftest import make_test_store

ROWS = st.integers(0, 12)
EMAILS = st.sampled_from(["a@uni.edu", "b@uni.edu"])
EVENTS = st.one_of(
    st.just(Started()),
    st.builds(ProgressReported, current=st.integers(0, 4), total=st.integers(4, 8)),
    st.builds(RowSucceeded, row=ROWS, email=EMAILS, internal=st.booleans()),
    st.builds(RowFailed, row=ROWS, email=EMAILS, error=st.sampled_from(["bad", "worse"])),
    st.builds(EmailSent, row=ROWS, email=EMAILS),
    st.builds(EmailFailed, row=ROWS, email=EMAILS, error=st.just("bounced")),
)
#: What ends a batch: mostly nothing, so that a job takes several batches before it finishes.
ENDINGS = st.sampled_from([None, None, None, None, Succeeded(), Failed("gave up")])
#: (job index, batch, its ending, re-send the whole batch afterwards, re-send one earlier event
#: within it)
OPERATIONS = st.lists(
    st.tuples(st.integers(0, 3), st.lists(EVENTS, min_size=1, max_size=4), ENDINGS,
              st.booleans(), st.booleans()),
    min_size=4,
    max_size=25,
)
TOTALS = st.lists(st.one_of(st.none(), st.integers(0, 12)), min_size=4, max_size=4)


async def snapshot(store: Store, job_ids: list[str]) -> dict[str, Any]:
    """Everything a user can read of each job: its state and every row error."""
    seen: dict[str, Any] = {}
    for job_id in job_ids:
        view = await store.get_job(job_id, 1000)
        assert view is not None
        seen[job_id] = (view.state, await store.read_job_errors(job_id, -1, 10_000))
    return seen


async def play(
    store: Store, totals: list[int | None], operations: list[Any]
) -> tuple[list[str], int]:
    """Create the jobs, then append every batch; refused batches are part of the story.

    Returns the job ids and how many appends were accepted (re-sends included).
    """
    job_ids = [f"job-{n}" for n in range(len(totals))]
    for job_id, total in zip(job_ids, totals, strict=True):
        await store.create_job(job_id, Created(owner="key_owner", total=total))
    sent: dict[int, list[NewEvent]] = {}
    accepted = 0
    for job, events, ending, resend, echo in operations:
        batch = [NewEvent(str(uuid.uuid4()), event) for event in [*events, ending] if event]
        if echo and sent.get(job):
            batch.insert(0, sent[job][-1])  # an event this job's worker already sent, retried
        for _ in range(2 if resend else 1):
            try:
                await store.append(job_ids[job], batch)
            except (Conflict, InvalidInput):
                break
            accepted += 1
            sent.setdefault(job, []).extend(batch)
    return job_ids, accepted


async def check_replay_matches(store: Store, totals: list[int | None], ops: list[Any]) -> int:
    """The live projection equals a full replay, and --verify agrees before and after, for the
    whole store and for each job alone. Returns how many appends were accepted."""
    assert isinstance(store, Rebuildable)
    job_ids, accepted = await play(store, totals, ops)
    live = await snapshot(store, job_ids)
    for job_id in job_ids:
        history = [e.event for e in await store.read_job_events(job_id, 0, 10_000)]
        assert fold_history(job_id, history).state == live[job_id][0]
        alone = (await replay.verify(store, job_id=job_id, chunk=3)).comparison
        assert alone is not None
        assert (alone.differing, alone.diffs) == (0, ()), job_id
    before = await replay.verify(store, chunk=7)
    assert before.comparison is not None
    assert before.comparison.differing == 0
    report = await replay.rebuild(store, chunk=7)
    assert report.events == len(await store.read_log(0, 100_000))
    assert await snapshot(store, job_ids) == live
    after = await replay.verify(store)
    assert after.comparison is not None
    assert after.comparison.differing == 0
    return accepted


#: Set JOBTRACKER_REPLAY_EXAMPLES=1000 for a long run of the property below.
EXAMPLES = int(os.environ.get("JOBTRACKER_REPLAY_EXAMPLES", "40"))


def test_live_projection_equals_full_replay(store_kind: str, tmp_path: Path) -> None:
    """Random histories over several jobs, with duplicates and retries: replay changes nothing,
    and the histories are real ones: on average at least three appends per example went in."""
    accepted: list[int] = []

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(totals=TOTALS, operations=OPERATIONS)
    def replay_changes_nothing(totals: list[int | None], operations: list[Any]) -> None:
        async def run() -> int:
            store = make_test_store(store_kind, tmp_path / uuid.uuid4().hex)
            await store.open()
            try:
                return await check_replay_matches(store, totals, operations)
            finally:
                await store.close()

        accepted.append(asyncio.run(run()))

    replay_changes_nothing()
    assert sum(accepted) >= 3 * len(accepted), f"accepted appends per example: {accepted}"


async def fill(store: Store, job_id: str, rows: int) -> None:
    await store.create_job(job_id, Created(owner="key_owner", total=rows))
    events: list[Event] = [Started()]
    for row in range(rows):
        events.append(RowFailed(row, f"r{row}@uni.edu", "bad") if row % 4 == 0
                      else RowSucceeded(row, f"r{row}@uni.edu", internal=row % 2 == 0))
    await store.append(job_id, [NewEvent(str(uuid.uuid4()), e) for e in events])


async def test_state_at_a_past_position_is_what_it_was_then(store: Store) -> None:
    """--at shows a job as it stood at a log position, and leaves the live projection alone."""
    assert isinstance(store, Rebuildable)
    await store.create_job("old", Created(owner="key_owner"))
    await store.append("old", [NewEvent("s", Started())])
    started_at = await store.last_position()
    await store.append("old", [NewEvent("r", RowSucceeded(0, "a@uni.edu", internal=True)),
                               NewEvent("d", Succeeded())])
    then = await replay.job_at(store, "old", started_at, 1000)
    assert (then.state.status, then.state.version) == (Status.STARTED, 2)
    report = await replay.rebuild_at(store, started_at)
    assert (report.events, report.statuses) == (2, {"STARTED": 1})
    now = await store.get_job("old", 1000)
    assert now is not None
    assert now.state.status is Status.SUCCESS


async def test_job_before_its_creation_position_is_not_found(store: Store) -> None:
    """Asking for a job at a position before it existed says so."""
    assert isinstance(store, Rebuildable)
    await store.create_job("first", Created(owner="key_owner"))
    await store.create_job("later", Created(owner="key_owner"))
    with pytest.raises(JobNotFound, match="later"):
        await replay.job_at(store, "later", 1, 1000)


async def test_one_job_rebuild_leaves_the_others_alone(store: Store) -> None:
    """--job replays one job; every other job keeps its projection untouched."""
    assert isinstance(store, Rebuildable)
    await fill(store, "one", 30)
    await fill(store, "two", 10)
    before = await snapshot(store, ["one", "two"])
    report = await replay.rebuild(store, job_id="one", chunk=4)
    assert (report.events, report.jobs) == (32, 1)
    assert await snapshot(store, ["one", "two"]) == before


async def test_appends_during_a_replay_are_not_lost(store: Store) -> None:
    """Events appended while replay runs are in the projection it swaps in."""
    assert isinstance(store, Rebuildable)
    await fill(store, "steady", 200)
    await store.create_job("busy", Created(owner="key_owner"))
    appended = 0

    async def keep_appending() -> None:
        nonlocal appended
        while not done.is_set():
            await store.append("busy", [NewEvent(str(uuid.uuid4()),
                                                 RowSucceeded(appended, "a@uni.edu", True))])
            appended += 1
            await asyncio.sleep(0)

    done = asyncio.Event()
    worker = asyncio.create_task(keep_appending())
    await asyncio.sleep(0)
    await replay.rebuild(store, chunk=5)
    done.set()
    await worker
    view = await store.get_job("busy", 1000)
    assert view is not None
    assert appended > 0
    assert (view.state.successful, view.state.version) == (appended, appended + 1)
    check = await replay.verify(store)
    assert check.comparison is not None
    assert check.comparison.differing == 0
