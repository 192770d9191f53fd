"""SQLite keeps row marks as bits, 64 rows to a database row: what that must never change."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobtracker.domain.errors import RowAlreadyReported
from jobtracker.domain.events import MAX_INT, Created, EmailSent, NewEvent, RowFailed, RowSucceeded
from jobtracker.domain.state import RowMark
from jobtracker.store import SqliteStore, replay
from jobtracker.store.migrate import migrations
from jobtracker.store.sqlite import lean, row_bits

MARKS = st.sets(
    st.builds(
        RowMark,
        st.one_of(st.integers(0, 300), st.integers(MAX_INT - 300, MAX_INT)),
        st.sampled_from(["outcome", "email"]),
    )
)


@given(MARKS)
def test_marks_read_back_from_their_bits_exactly(marks: set[RowMark]) -> None:
    """Gathered into 64-row words and stored as signed integers, marks come back unchanged."""
    bits: row_bits.Bits = {}
    row_bits.add(bits, "job-1", marks)
    stored = row_bits.params(bits)
    assert all(-(2**63) <= value < 2**63 and value != 0 for *_, value in stored)
    back = {mark for _, kind, chunk, value in stored
            for mark in row_bits.marks_of(chunk, kind, value)}
    assert back == marks


@given(MARKS.filter(bool))
def test_gathering_a_mark_twice_is_refused(marks: set[RowMark]) -> None:
    """Two plans of one group marking the same row: refused, as a unique key would."""
    bits: row_bits.Bits = {}
    row_bits.add(bits, "job-1", marks)
    with pytest.raises(row_bits.RowMarkedTwice):
        row_bits.add(bits, "job-1", [min(marks)])
    with pytest.raises(row_bits.RowMarkedTwice):
        row_bits.add({}, "job-1", [*sorted(marks), min(marks)])


def _old_database(path: Path) -> None:
    """A file as the first migration left it, with marks one row each (`job_rows`)."""
    conn = sqlite3.connect(path, isolation_level=None)
    first = migrations("sqlite")[0]
    conn.executescript(
        "CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT);"
        f"INSERT INTO schema_migrations VALUES ('{first.name}', '2026-11-01');{first.sql}"
    )
    rows = [(1, "row_succeeded", 63), (2, "row_succeeded", 64), (3, "email_sent", 64),
            (4, "row_succeeded", MAX_INT)]
    conn.execute(
        "INSERT INTO events (job_id, version, event_id, type, data, recorded_at) "
        "VALUES ('job-1', 1, 'c', 'created', '{\"label\":null,\"owner\":\"key_a\",\"total\":null}',"
        " '2026-11-01')"
    )
    for version, kind, row in rows:
        fields = {"email": "a@uni.edu", "row": row}
        if kind == "row_succeeded":
            fields["internal"] = True
        data = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()
        conn.execute(
            "INSERT INTO events (job_id, version, event_id, type, data, recorded_at) "
            "VALUES ('job-1', ?, ?, ?, ?, '2026-11-01')",
            (version + 1, f"e{version}", kind, data),
        )
        conn.execute(
            "INSERT INTO job_rows VALUES ('job-1', ?, ?)",
            (row, "email" if kind == "email_sent" else "outcome"),
        )
    conn.execute(
        "INSERT INTO jobs (job_id, owner, status, version, successful, internal_count, "
        "emails_sent, updated_position) VALUES ('job-1', 'key_a', 'PROGRESS', 5, 3, 3, 1, 5)"
    )
    conn.close()


async def test_marks_written_before_the_bits_migration_still_refuse_a_second_outcome(
    tmp_path: Path,
) -> None:
    """Upgrading a file keeps every row's one outcome: the old marks become bits."""
    path = tmp_path / "old.db"
    _old_database(path)
    store = SqliteStore(str(path))
    await store.open()  # migrates
    try:
        for row in (63, 64, MAX_INT):
            with pytest.raises(RowAlreadyReported, match=f"row {row} "):
                await store.append("job-1", [NewEvent(f"x{row}", RowFailed(row, "a@b.c", "x"))])
        with pytest.raises(RowAlreadyReported, match="row 64 "):
            await store.append("job-1", [NewEvent("m64", EmailSent(64, "a@uni.edu"))])
        await store.append("job-1", [NewEvent("m63", EmailSent(63, "a@uni.edu")),
                                     NewEvent("r62", RowSucceeded(62, "a@uni.edu", True))])
        comparison = (await replay.verify(store)).comparison
        assert comparison is not None
        assert (comparison.differing, comparison.diffs) == (0, ())
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "job_rows" not in tables


async def test_verify_names_a_tampered_mark_and_rebuild_restores_it(tmp_path: Path) -> None:
    """A bit set or cleared by hand shows up as that row's mark, and a rebuild puts it right."""
    path = tmp_path / "jobs.db"
    store = SqliteStore(str(path))
    await store.open()
    try:
        await store.create_job("job-1", Created(owner="key_a"))
        await store.append("job-1", [NewEvent(f"r{row}", RowSucceeded(row, "a@uni.edu", True))
                                     for row in (5, 70)])
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("INSERT INTO job_row_bits VALUES ('job-1', 'email', 1, 1 << 35)")  # row 99
        conn.execute("DELETE FROM job_row_bits WHERE kind = 'outcome' AND chunk = 0")  # row 5
        conn.close()
        check = await replay.verify(store)
        assert check.comparison is not None
        described = "\n".join(
            line for diff in check.comparison.diffs for line in replay.describe(diff))
        assert "row marks only in the live projection: row 99 (email)" in described
        assert "row marks only in the log: row 5 (outcome)" in described
        await replay.rebuild(store)
        with pytest.raises(RowAlreadyReported, match="row 5 "):
            await store.append("job-1", [NewEvent("again", RowFailed(5, "a@uni.edu", "x"))])
        await store.append("job-1", [NewEvent("mail", EmailSent(99, "a@uni.edu"))])
    finally:
        await store.close()


def test_a_fresh_file_has_only_the_bits_table(tmp_path: Path) -> None:
    """New files are created at the latest migration: no per-row mark table at all."""
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    lean.migrate(conn)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    assert "job_row_bits" in tables
    assert "job_rows" not in tables
