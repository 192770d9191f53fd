"""Group commit on SQLite: many requests, one transaction, each request still on its own."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import FrameType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobtracker.domain.errors import (
    JobIdTaken,
    JobNotFound,
    JobtrackerError,
    RowAlreadyReported,
    StoreUnavailable,
)
from jobtracker.domain.events import (
    Created,
    EmailSent,
    Failed,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.domain.stored import TYPE_CODES
from jobtracker.store import SqliteStore
from jobtracker.store.base import AppendResult
from jobtracker.store.sqlite import log as sqlite_log
from jobtracker.store.sqlite.log import SqliteLog
from tests.conditions import until

LOG_MODULE = sqlite_log.__file__
#: Examples per property run (CI keeps it small; raise it for a longer hunt).
FUZZ_EXAMPLES = int(os.environ.get("JOBTRACKER_FUZZ_EXAMPLES", "60"))


def row(event_id: str, n: int) -> NewEvent:
    return NewEvent(event_id, RowSucceeded(row=n, email=f"p{n}@uni.edu", internal=False))


def test_one_refused_request_rolls_back_alone(tmp_path: Path) -> None:
    """In one group, a refused request leaves no trace and the requests around it commit."""
    log = SqliteLog(str(tmp_path / "g.db"))
    log.migrate()
    log.create_job("a", Created(owner="k"))
    outcomes = log.append_group([
        ("a", [row("e1", 1)]),
        ("a", [row("e2", 2), row("e3", 1)]),  # row 1 again: refused as a whole
        ("missing", [NewEvent("e4", Started())]),
        ("a", [row("e5", 3), row("e1", 1)]),  # e1 is an exact re-send from earlier in the group
    ])
    assert outcomes[0] == AppendResult(1, 0, 2)
    assert isinstance(outcomes[1], RowAlreadyReported)
    assert isinstance(outcomes[2], JobNotFound)
    assert outcomes[3] == AppendResult(1, 1, 3)
    assert [(e.version, e.event_id) for e in log.read_job_events("a")][1:] == [(2, "e1"), (3, "e5")]
    log.close()


async def test_without_group_commit_every_append_commits_alone(tmp_path: Path) -> None:
    """`group_commit=False` is the one-commit-per-request reference, with the same answers: the
    same path, in groups of one."""
    results = {}
    for grouped in (True, False):
        store = SqliteStore(str(tmp_path / f"{grouped}.db"), group_commit=grouped)
        await store.open()
        await store.create_job("a", Created(owner="k"))
        answers = await asyncio.gather(*(store.append("a", [row(f"e{n}", n)]) for n in range(20)))
        results[grouped] = sorted(a.version for a in answers)
        committer = store.committer
        assert committer.requests == 20
        assert (committer.groups < 20) if grouped else (committer.groups == 20)
        await store.close()
    assert results[True] == results[False] == list(range(2, 22))


async def test_a_burst_of_job_creations_shares_commits_and_a_taken_id_fails_alone(
    tmp_path: Path,
) -> None:
    """Sixty-four jobs created at once cost a few commits, not sixty-four; one asking for an id
    another key holds is refused on its own, the others are created, and a repeat by the owner
    gets the existing job."""
    store = SqliteStore(str(tmp_path / "c.db"))
    await store.open()
    try:
        await store.create_job("taken", Created(owner="other"))
        answers = await asyncio.gather(
            *(store.create_job(f"job-{n}", Created(owner="k", total=n)) for n in range(64)),
            store.create_job("taken", Created(owner="k")),
            store.create_job("job-0", Created(owner="k")),
            return_exceptions=True,
        )
        created = answers[:64]
        assert all(isinstance(a, tuple) and a[1] for a in created)
        assert [a[0].expected_total for a in created if isinstance(a, tuple)] == list(range(64))
        assert isinstance(answers[64], JobIdTaken)
        assert isinstance(answers[65], tuple)
        assert answers[65][1] is False
        assert store.creator.requests == 67
        assert store.creator.groups <= 4
        for n in (0, 63):
            view = await store.get_job(f"job-{n}", 10)
            assert view is not None
            assert view.state.owner == "k"
        taken = await store.get_job("taken", 10)
        assert taken is not None
        assert taken.state.owner == "other"
    finally:
        await store.close()


# -- a group written together leaves exactly what one-by-one appends leave ----------------------

_rows = st.integers(0, 4)
_emails = st.sampled_from(["a@uni.edu", "b@gmail.com"])
_events = st.one_of(
    st.just(Started()),
    st.builds(ProgressReported, current=st.integers(0, 6), total=st.integers(0, 6)),
    st.builds(RowSucceeded, row=_rows, email=_emails, internal=st.booleans()),
    st.builds(RowFailed, row=_rows, email=_emails, error=st.just("Invalid email")),
    st.builds(EmailSent, row=_rows, email=_emails),
    st.just(Succeeded()),
    st.builds(Failed, error=st.just("Achievement not found")),
)
# Mostly fresh ids (the plain case a group is written together in), sometimes one of a small pool:
# re-sends and reused ids must send the group down the careful path with the same answers.
_ids = st.one_of(st.uuids().map(str), st.sampled_from([f"e{n}" for n in range(4)]))
_requests = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "small", "missing"]),
        st.lists(st.builds(NewEvent, event_id=_ids, event=_events), min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=8,
)
#: Tables as the store leaves them; `recorded_at` comes from a fixed clock on both sides.
_TABLES = {
    "log": "SELECT k.job_id, l.version, l.position, l.event_id, l.type, l.at, l.data "
           "FROM log l JOIN log_jobs k ON k.job_key = l.job_key ORDER BY l.position",
    "jobs": "SELECT * FROM jobs ORDER BY job_id",
    "job_row_bits": "SELECT * FROM job_row_bits ORDER BY job_id, kind, chunk",
    "job_errors": "SELECT * FROM job_errors ORDER BY job_id, row",
}


def _fresh_log(path: Path) -> SqliteLog:
    log = SqliteLog(str(path), clock=lambda: "2026-12-01T00:00:00Z")
    log.migrate()
    log.create_job("a", Created(owner="k"))
    log.create_job("b", Created(owner="k"))
    log.create_job("small", Created(owner="k", total=2))
    return log


def _tables(log: SqliteLog) -> dict[str, list[tuple[object, ...]]]:
    # `created` events get ids of their own making: compare everything but those ids.
    dump = {name: list(log.conn.execute(query)) for name, query in _TABLES.items()}
    dump["log"] = [row for row in dump["log"] if row[4] != TYPE_CODES["created"]]
    return dump


def _answer(outcome: object) -> object:
    if isinstance(outcome, JobtrackerError):
        return type(outcome).__name__, outcome.detail
    return outcome


@settings(max_examples=FUZZ_EXAMPLES, deadline=None)
@given(requests=_requests)
def test_a_group_leaves_what_the_same_appends_one_by_one_leave(
    tmp_path_factory: pytest.TempPathFactory, requests: list[tuple[str, list[NewEvent]]]
) -> None:
    """Answers, log, projection (with each job's last position), row marks and row errors are the
    same whether a group is committed together or its requests are appended one at a time."""
    folder = tmp_path_factory.mktemp("group")
    together, one_by_one = _fresh_log(folder / "together.db"), _fresh_log(folder / "alone.db")
    grouped_answers = [_answer(o) for o in together.append_group(requests)]
    alone_answers = []
    for job_id, items in requests:
        try:
            alone_answers.append(_answer(one_by_one.append(job_id, items)))
        except JobtrackerError as exc:
            alone_answers.append(_answer(exc))
    assert grouped_answers == alone_answers
    assert _tables(together) == _tables(one_by_one)
    together.close()
    one_by_one.close()


def test_a_plain_group_over_several_jobs_is_written_together(tmp_path: Path) -> None:
    """Fresh events for fresh rows, two requests for one job among them: every request is
    answered with its own version, each job's events are filed under it, and each job's
    projection points at its own newest event. (Job "b" is ahead, so that an event filed under the
    wrong job would not collide with a version there and send the group the careful way.)"""
    log = _fresh_log(tmp_path / "plain.db")
    log.append("b", [row("b1", 10), row("b2", 11)])
    outcomes = log.append_group([
        ("a", [row("p1", 1)]),
        ("b", [row("p2", 1), row("p3", 2)]),
        ("a", [row("p4", 2)]),
    ])
    assert outcomes == [AppendResult(1, 0, 2), AppendResult(2, 0, 5), AppendResult(1, 0, 3)]
    assert [e.event_id for e in log.read_job_events("a")][1:] == ["p1", "p4"]
    assert [e.event_id for e in log.read_job_events("b")][1:] == ["b1", "b2", "p2", "p3"]
    positions = dict(log.conn.execute(
        "SELECT k.job_id, max(l.position) FROM log l JOIN log_jobs k ON k.job_key = l.job_key "
        "GROUP BY k.job_id"))
    kept = dict(log.conn.execute("SELECT job_id, updated_position FROM jobs"))
    assert kept == positions
    log.close()


# -- folding on the loop must not tie the loop to another process's write lock -------------------


@asynccontextmanager
async def store_with_job(path: str) -> AsyncIterator[SqliteStore]:
    """An open store on `path` holding job "a"; closed afterwards."""
    store = SqliteStore(path)
    await store.open()
    try:
        await store.create_job("a", Created(owner="k"))
        yield store
    finally:
        await store.close()


def writer_thread_running(function: str | None) -> bool:
    """Whether the store's writer thread is inside `SqliteLog.<function>` right now (None: inside
    any call on its connection). Read off the thread's own stack."""
    frames = sys._current_frames()
    for thread in threading.enumerate():
        if not thread.name.startswith("jobtracker-sqlite-writer") or thread.ident not in frames:
            continue
        stack: FrameType | None = frames[thread.ident]
        while stack is not None:
            code = stack.f_code
            if code.co_filename == LOG_MODULE and function in (None, code.co_name):
                return True
            stack = stack.f_back
    return False


def holding_the_write_lock(path: str) -> SqliteLog:
    """Another connection (another process, as far as the store can tell) in a write
    transaction on `path`, until it rolls back."""
    other = SqliteLog(path)
    other.conn.execute("BEGIN IMMEDIATE")
    return other


async def test_reads_answer_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """Another writer (an SDK worker, a replay) holding the lock delays appends, never reads; the
    append commits once the lock is free."""
    async with store_with_job(str(tmp_path / "locked.db")) as store:
        other = holding_the_write_lock(store.path)
        try:
            appending = asyncio.ensure_future(store.append("a", [row("e1", 1)]))
            # The loop keeps turning while the append waits for the lock, on the writer thread.
            await until(lambda: writer_thread_running("begin"), "the append never waited")
            assert not appending.done()
            view = await store.get_job("a", 10)  # the loop is free to answer
            assert view is not None
            assert view.state.version == 1
        finally:
            other.conn.execute("ROLLBACK")
            other.close()
        assert await asyncio.wait_for(appending, 10) == AppendResult(1, 0, 2)
        assert [e.event_id for e in await store.read_job_events("a", after_version=1)] == ["e1"]


async def test_a_caller_that_goes_away_still_gets_its_events_in(tmp_path: Path) -> None:
    """A cancelled append (a client that hung up) is written with its group, and the next
    append gets the next version."""
    async with store_with_job(str(tmp_path / "cancel.db")) as store:
        first = asyncio.ensure_future(store.append("a", [row("e1", 1)]))
        await asyncio.sleep(0)  # queued and being written
        first.cancel()
        assert await store.append("a", [row("e2", 2)]) == AppendResult(1, 0, 3)
        versions = [e.version for e in await store.read_job_events("a")]
        assert versions == [1, 2, 3]


async def test_an_append_racing_close_is_refused_cleanly(tmp_path: Path) -> None:
    """An append that arrives while the store closes gets StoreUnavailable (a 503), not a crash
    of the process from two threads on one connection."""
    store = SqliteStore(str(tmp_path / "closing.db"))
    await store.open()
    await store.create_job("a", Created(owner="k"))
    closing = asyncio.ensure_future(store.close())
    await asyncio.sleep(0)  # close() is under way
    with pytest.raises(StoreUnavailable):
        await store.append("a", [row("e1", 1)])
    await closing


async def test_shutdown_while_waiting_for_another_writer_leaves_the_file_unlocked(
    tmp_path: Path,
) -> None:
    """A loop shutting down cancels every task, among them an append waiting on the writer thread
    for another process's lock. Once that process lets go, nothing is left holding the lock."""
    path = str(tmp_path / "shutdown.db")
    async with store_with_job(path) as store:
        other = holding_the_write_lock(path)
        appending = asyncio.ensure_future(store.append("a", [row("e1", 1)]))
        await until(lambda: writer_thread_running("begin"), "the writer never waited in BEGIN")
        cancelled = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in cancelled:
            task.cancel()
        await until(appending.done, "the append's caller was never cancelled")
        other.conn.execute("ROLLBACK")
        await until(lambda: all(task.done() for task in cancelled), "a cancelled task lingers")
        await until(lambda: not writer_thread_running(None), "the writer thread never finished")
        probe = sqlite3.connect(path, timeout=0.5, isolation_level=None)
        probe.execute("BEGIN IMMEDIATE")  # "database is locked" if a transaction was left open
        probe.execute("ROLLBACK")
        probe.close()
        other.close()
        # The cancelled append may or may not have gone in (its caller left); the log stays whole.
        result = await store.append("a", [row("e2", 2)])
        ids = [e.event_id for e in await store.read_job_events("a", after_version=1)]
        assert ids in (["e2"], ["e1", "e2"])
        assert result == AppendResult(1, 0, 1 + len(ids))
