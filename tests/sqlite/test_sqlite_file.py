"""What the SQLite file itself guarantees, whoever opens it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from jobtracker.domain.events import Created, NewEvent, Started
from jobtracker.store.migrate import migrate_sqlite, migrations
from jobtracker.store.rebuild import ProjectionRows
from jobtracker.store.sqlite import rebuild as sqlite_rebuild
from jobtracker.store.sqlite.group import insert_rows
from jobtracker.store.sqlite.log import SqliteLog


@pytest.fixture
def log(tmp_path: Path) -> SqliteLog:
    opened = SqliteLog(str(tmp_path / "jobs.db"))
    opened.migrate()
    opened.create_job("job-1", Created(owner="key_a"))
    opened.append("job-1", [NewEvent("e1", Started())])
    return opened


def test_database_refuses_update_of_events(log: SqliteLog) -> None:
    """The log is append-only even for someone with a SQL shell: UPDATE fails, on the events
    and on the job keys they refer to."""
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("UPDATE log SET type = 9 WHERE event_id = 'e1'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("UPDATE log_jobs SET job_id = 'other'")


def test_database_refuses_delete_of_events(log: SqliteLog) -> None:
    """DELETE fails too, and the event is still there."""
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("DELETE FROM log")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        log.conn.execute("DELETE FROM log_jobs")
    assert log.conn.execute("SELECT count(*) FROM log").fetchone() == (2,)


def test_file_is_in_wal_mode(log: SqliteLog) -> None:
    """Readers never wait for the writer: the file is in WAL mode."""
    assert log.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_every_commit_is_synced_to_disk(log: SqliteLog) -> None:
    """An acknowledged append survives power loss, not only a crash: the connection writes go
    through syncs the WAL at every commit (synchronous=FULL), and is back at FULL after replay
    filled a scratch area without syncing."""
    full = 2
    assert log.conn.execute("PRAGMA synchronous").fetchone() == (full,)
    sqlite_rebuild.reset_area(log.conn, "check")
    sqlite_rebuild.write_area(log.conn, "check", ProjectionRows())
    assert log.conn.execute("PRAGMA synchronous").fetchone() == (full,)


def test_migrating_again_is_a_no_op(log: SqliteLog) -> None:
    """Every migration is recorded once; a second run applies nothing and changes nothing."""
    assert migrate_sqlite(log.conn) == []
    rows = log.conn.execute("SELECT name FROM schema_migrations ORDER BY rowid")
    applied = [name for (name,) in rows]
    assert applied == [m.name for m in migrations("sqlite")]


def test_failed_migration_leaves_no_trace(tmp_path: Path) -> None:
    """A migration runs in one transaction with its record: a failure applies none of it."""
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.execute("CREATE TABLE jobs (x)")  # makes 0001 fail half-way through
    with pytest.raises(sqlite3.OperationalError, match="jobs"):
        migrate_sqlite(conn)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "log" not in tables
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


def test_position_is_never_reused(tmp_path: Path) -> None:
    """AUTOINCREMENT: positions only grow, so a tailing reader never sees a number twice."""
    log = SqliteLog(str(tmp_path / "jobs.db"))
    log.migrate()
    schema = log.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'log'").fetchone()
    assert "AUTOINCREMENT" in schema[0]


@pytest.mark.parametrize("count", [1, 2, 3, 63, 64, 65, 100, 127, 128, 129, 1000])
def test_rows_inserted_many_to_a_statement_arrive_whole_and_in_order(count: int) -> None:
    """Batches go in as 64-row INSERTs and a power-of-two tail: every row, once, in order."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (position INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER, s TEXT)")
    rows = [(n, f"row {n}") for n in range(count)]
    insert_rows(conn, "INSERT INTO t (n, s) VALUES ", rows)
    assert conn.execute("SELECT n, s FROM t ORDER BY position").fetchall() == rows
