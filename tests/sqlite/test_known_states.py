"""Job states a writer remembers from its own groups hold only while nothing else has written."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from jobtracker.domain.events import Created, NewEvent, RowSucceeded
from jobtracker.store import SqliteStore
from jobtracker.store.sqlite.group import KnownStates, write_together
from jobtracker.store.sqlite.log import SqliteLog, connect

NOW = "2026-12-02T00:00:00.000000Z"


def row(n: int) -> NewEvent:
    return NewEvent(f"e{n}", RowSucceeded(row=n, email=f"p{n}@uni.edu", internal=True))


def committed_group(log: SqliteLog, known: KnownStates, n: int) -> None:
    """One plain group for job "a", committed, as the store's quick path does it."""
    log.conn.execute("BEGIN IMMEDIATE")
    write_together(log.conn, [("a", [row(n)])], NOW, known)
    log.conn.execute("COMMIT")
    known.committed()


def remembered(log: SqliteLog, known: KnownStates) -> dict[str, int]:
    """The versions a group starting now would take from memory instead of reading."""
    log.conn.execute("BEGIN IMMEDIATE")
    try:
        return {job_id: s.version for job_id, s in known.current(log.conn, {"a"}).items()}
    finally:
        log.conn.execute("ROLLBACK")


@pytest.fixture
def log(tmp_path: Path) -> SqliteLog:
    opened = SqliteLog(str(tmp_path / "k.db"))
    opened.migrate()
    opened.create_job("a", Created(owner="k"))
    return opened


def test_a_committed_group_is_remembered(log: SqliteLog) -> None:
    known = KnownStates()
    committed_group(log, known, 1)
    assert remembered(log, known) == {"a": 2}


def _another_process_commits(log: SqliteLog) -> None:
    other = connect(log.path)
    other.execute("INSERT INTO job_errors (job_id, row, email, error) VALUES ('z', 1, 'x', 'y')")
    other.close()


def _this_connection_writes_outside_a_group(log: SqliteLog) -> None:
    log.create_job("b", Created(owner="k"))


def _a_table_is_swapped(log: SqliteLog) -> None:
    log.conn.execute("ALTER TABLE job_errors RENAME TO job_errors_old")
    log.conn.execute("ALTER TABLE job_errors_old RENAME TO job_errors")


@pytest.mark.parametrize(
    "write",
    [_another_process_commits, _this_connection_writes_outside_a_group, _a_table_is_swapped],
    ids=["another-process-commits", "this-connection-writes", "a-table-is-swapped"],
)
def test_remembered_states_are_forgotten_once_anything_else_writes(
    log: SqliteLog, write: Callable[[SqliteLog], None]
) -> None:
    known = KnownStates()
    committed_group(log, known, 1)
    write(log)
    assert remembered(log, known) == {}


def test_a_rolled_back_group_leaves_nothing_remembered(log: SqliteLog) -> None:
    known = KnownStates()
    committed_group(log, known, 1)
    log.conn.execute("BEGIN IMMEDIATE")
    write_together(log.conn, [("a", [row(2)])], NOW, known)
    log.conn.execute("ROLLBACK")
    known.rolled_back()
    assert remembered(log, known) == {}
    view = log.get_job("a", 10)
    assert view is not None
    assert view.state.version == 2


async def test_two_processes_taking_turns_on_one_job_keep_exact_counts(tmp_path: Path) -> None:
    """A server and an SDK writing straight into the same file, one append each in turn."""
    path = str(tmp_path / "turns.db")
    stores = [SqliteStore(path), SqliteStore(path)]
    for store in stores:
        await store.open()
    try:
        await stores[0].create_job("a", Created(owner="k"))
        answers = [await stores[n % 2].append("a", [row(n)]) for n in range(20)]
        assert [a.version for a in answers] == list(range(2, 22))
        view = await stores[1].get_job("a", 10)
        assert view is not None
        assert (view.state.successful, view.state.version) == (20, 21)
        with sqlite3.connect(path) as conn:
            events = conn.execute(
                "SELECT count(*) FROM log WHERE job_key = "
                "(SELECT job_key FROM log_jobs WHERE job_id = 'a')").fetchone()
        assert events == (21,)
    finally:
        await asyncio.gather(*(store.close() for store in stores))
