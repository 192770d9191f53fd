# ruff: noqa: S608 -- table names are built only from fixed names and a checked area name (`_table`);
# every value is bound as a parameter.
"""The SQLite side of replay: scan the log fast, fill scratch tables, swap them in by renaming.

A scratch area `x` is three tables, `jobs__x`, `job_row_bits__x` and `job_errors__x`, created from
the live tables' own `CREATE` statements so they never drift from the migrations. Swapping renames
tables inside one `BEGIN IMMEDIATE`: readers (WAL) keep seeing the old projection until the commit,
then the new one; writers wait for the lock and fold onto the new one.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.events import MAX_INT
from jobtracker.domain.state import RowError, RowMark, Status
from jobtracker.domain.stored import FORMS, form_of
from jobtracker.store.base import JobView, utc_now
from jobtracker.store.rebuild import Comparison, JobDiff, LogEntry, ProjectionRows, TailFolder
from jobtracker.store.rows import JOB_COLUMNS, state_from_row, state_to_row
from jobtracker.store.sqlite import row_bits

PROJECTION_TABLES = ("jobs", "job_row_bits", "job_errors")
_AREA_NAME = re.compile(r"[a-z][a-z_]{0,19}")
_CREATE_NAME = re.compile(r'^CREATE TABLE\s+(?:"[^"]+"|\w+)', re.IGNORECASE)
_JOB_ROW = (*JOB_COLUMNS, "updated_position")
#: Events folded per scan while catching up under the lock.
_TAIL_CHUNK = 20_000
#: Marks and errors shown per side for each differing job.
_SHOWN = 5


def _table(base: str, area: str) -> str:
    if not _AREA_NAME.fullmatch(area):
        raise InvalidInput(f"area: {area!r} is not a scratch area name")
    return f'"{base}__{area}"'


@contextmanager
def _immediate(conn: sqlite3.Connection, *, keep: bool = True) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT" if keep else "ROLLBACK")


def last_position(conn: sqlite3.Connection) -> int:
    """The highest position in the log."""
    (position,) = conn.execute("SELECT COALESCE(MAX(position), 0) FROM log").fetchone()
    return int(position)


def scan_log(
    conn: sqlite3.Connection,
    after_position: int,
    limit: int,
    job_id: str | None = None,
    after_version: int = 0,
    upto: int | None = None,
) -> list[LogEntry]:
    """See `Rebuildable.scan_log`; SQLite commits in position order, so any prefix is final."""
    ceiling = MAX_INT if upto is None else upto
    if job_id is None:
        rows = conn.execute(
            f"{_SCAN} WHERE l.position > ? AND l.position <= ? ORDER BY l.position LIMIT ?",
            (after_position, ceiling, limit),
        )
    else:
        rows = conn.execute(
            f"{_SCAN} WHERE k.job_id = ? AND l.version > ? AND l.position <= ? "
            "ORDER BY l.version LIMIT ?",
            (job_id, after_version, ceiling, limit),
        )
    # The fold reads a type by name beside its schema version; the positional data it reads as is.
    forms = FORMS
    return [(job_id, version, position, *(forms.get(form) or form_of(form)), data)
            for job_id, version, position, form, data in rows]


_SCAN = (
    "SELECT k.job_id, l.version, l.position, l.type, l.data "
    "FROM log l JOIN log_jobs k ON k.job_key = l.job_key"
)


def reset_area(conn: sqlite3.Connection, area: str) -> None:
    """Create the area's tables empty, from the live tables' definitions."""
    with _immediate(conn):
        for base in PROJECTION_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {_table(base, area)}")
            (sql,) = conn.execute(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (base,)
            ).fetchone()
            conn.execute(_CREATE_NAME.sub(f"CREATE TABLE {_table(base, area)}", sql, count=1))


def drop_area(conn: sqlite3.Connection, area: str) -> None:
    """Drop the area's tables."""
    with _immediate(conn):
        for base in PROJECTION_TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {_table(base, area)}")


def _insert(conn: sqlite3.Connection, area: str, rows: ProjectionRows) -> None:
    bits: row_bits.Bits = {
        (job_id, kind, chunk): word
        for job_id, marks in rows.marks
        for kind, chunk, word in marks.words()
    }
    conn.executemany(
        row_bits.MERGE.format(table=_table("job_row_bits", area)), row_bits.params(bits)
    )
    conn.executemany(f"INSERT INTO {_table('job_errors', area)} VALUES (?, ?, ?, ?)", rows.errors)
    conn.executemany(
        f"INSERT INTO {_table('jobs', area)} ({', '.join(_JOB_ROW)}) "
        f"VALUES ({', '.join('?' * len(_JOB_ROW))})",
        [(*state_to_row(state), position) for state, position in rows.states],
    )


def write_area(conn: sqlite3.Connection, area: str, rows: ProjectionRows) -> None:
    """Add rows to the area in one short transaction (live writers wait only that long).

    Without fsync: a scratch area lost in a crash is simply rebuilt, and the swap that makes it
    live is a commit of its own, at the connection's usual durability.
    """
    (level,) = conn.execute("PRAGMA synchronous").fetchone()
    conn.execute("PRAGMA synchronous = NORMAL")
    try:
        with _immediate(conn):
            _insert(conn, area, rows)
    finally:
        conn.execute(f"PRAGMA synchronous = {int(level)}")


def _catch_up(
    conn: sqlite3.Connection,
    area: str,
    fold_tail: TailFolder,
    after_position: int,
    after_version: int,
    job_id: str | None,
) -> int:
    """Inside the caller's write transaction: fold every event not yet folded, then drain; then
    forget the jobs a prune removed since the area read their events (no prune can commit now:
    it writes too)."""
    while entries := scan_log(conn, after_position, _TAIL_CHUNK, job_id, after_version):
        _insert(conn, area, fold_tail(entries))
        _, after_version, after_position, *_ = entries[-1]
    _insert(conn, area, fold_tail(()))
    for base in PROJECTION_TABLES:
        conn.execute(
            f"DELETE FROM {_table(base, area)} "
            "WHERE job_id IN (SELECT job_id FROM job_tombstones)"
        )
    return after_position


#: What tells every server that the projection changed under it (migration 0009).
_RECORD_SWAP = "INSERT INTO projection_swaps (job_id, swapped_at) VALUES (?, ?)"


def swap_in(
    conn: sqlite3.Connection,
    area: str,
    fold_tail: TailFolder,
    after_position: int,
    after_version: int = 0,
    job_id: str | None = None,
) -> int:
    """Catch up and make the area live, all in one write transaction; see `Rebuildable`."""
    with _immediate(conn):
        last = _catch_up(conn, area, fold_tail, after_position, after_version, job_id)
        if job_id is None:
            _swap_tables(conn, area)
        else:
            for base in PROJECTION_TABLES:
                conn.execute(f'DELETE FROM "{base}" WHERE job_id = ?', (job_id,))
                conn.execute(
                    f'INSERT INTO "{base}" SELECT * FROM {_table(base, area)} WHERE job_id = ?',
                    (job_id,),
                )
        conn.execute(_RECORD_SWAP, (job_id, utc_now()))
    # Dropping a million rows takes a while: done after the swap, outside its lock.
    drop_area(conn, "retired")
    drop_area(conn, area)
    return last


def _swap_tables(conn: sqlite3.Connection, area: str) -> None:
    """Rename the area's tables into place, with the live tables' own indexes and triggers.

    An index or trigger follows its table when it is renamed, so they are read first, then
    dropped from the retired tables and created again, from their own SQL, on the new ones.
    """
    extras = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "AND sql IS NOT NULL AND tbl_name IN (?, ?, ?)",
        PROJECTION_TABLES,
    ).fetchall()
    for base in PROJECTION_TABLES:
        # Left over only if a process died between a swap and its clean-up.
        conn.execute(f"DROP TABLE IF EXISTS {_table(base, 'retired')}")
        conn.execute(f'ALTER TABLE "{base}" RENAME TO {_table(base, "retired")}')
        conn.execute(f'ALTER TABLE {_table(base, area)} RENAME TO "{base}"')
    for kind, name, sql in extras:
        quoted = name.replace('"', '""')
        conn.execute(f'DROP {"INDEX" if kind == "index" else "TRIGGER"} "{quoted}"')
        conn.execute(sql)
    # The rebuilt rows went in without the counting triggers (migration 0004): count them once.
    conn.execute("UPDATE job_counts SET count = 0")
    conn.execute(
        "INSERT INTO job_counts (status, count) SELECT status, count(*) FROM jobs WHERE true "
        "GROUP BY status ON CONFLICT (status) DO UPDATE SET count = excluded.count"
    )


def _differing_jobs(conn: sqlite3.Connection, area: str, job_id: str | None) -> list[str]:
    where = "" if job_id is None else " WHERE job_id = ?"
    parts = []
    for base in PROJECTION_TABLES:
        live, rebuilt = f'"{base}"', _table(base, area)
        for one, other in ((live, rebuilt), (rebuilt, live)):
            parts.append(
                f"SELECT job_id FROM (SELECT * FROM {one}{where} "
                f"EXCEPT SELECT * FROM {other}{where})"
            )
    params = () if job_id is None else (job_id,) * (2 * len(parts))
    query = " UNION ".join(parts) + " ORDER BY job_id"
    return [job for (job,) in conn.execute(query, params)]


def _job_row(conn: sqlite3.Connection, table: str, job_id: str) -> dict[str, Any] | None:
    row = conn.execute(
        f"SELECT {', '.join(_JOB_ROW)} FROM {table} WHERE job_id = ?", (job_id,)
    ).fetchone()
    return None if row is None else dict(zip(_JOB_ROW, row, strict=True))


def _only_in(
    conn: sqlite3.Connection, columns: str, one: str, other: str, job_id: str
) -> list[tuple[Any, ...]]:
    return conn.execute(
        f"SELECT {columns} FROM {one} WHERE job_id = ? "
        f"EXCEPT SELECT {columns} FROM {other} WHERE job_id = ? ORDER BY 1 LIMIT {_SHOWN}",
        (job_id, job_id),
    ).fetchall()


def _marks(conn: sqlite3.Connection, table: str, job_id: str) -> set[RowMark]:
    rows = conn.execute(f"SELECT chunk, kind, bits FROM {table} WHERE job_id = ?", (job_id,))
    return {mark for chunk, kind, bits in rows for mark in row_bits.marks_of(chunk, kind, bits)}


def _job_diff(conn: sqlite3.Connection, area: str, job_id: str) -> JobDiff:
    marks_live = _marks(conn, '"job_row_bits"', job_id)
    marks_new = _marks(conn, _table("job_row_bits", area), job_id)
    errors_live, errors_new = '"job_errors"', _table("job_errors", area)
    return JobDiff(
        job_id=job_id,
        live=_job_row(conn, '"jobs"', job_id),
        rebuilt=_job_row(conn, _table("jobs", area), job_id),
        marks_only_live=tuple(sorted(marks_live - marks_new)[:_SHOWN]),
        marks_only_rebuilt=tuple(sorted(marks_new - marks_live)[:_SHOWN]),
        errors_only_live=tuple(
            RowError(*r)
            for r in _only_in(conn, "row, email, error", errors_live, errors_new, job_id)
        ),
        errors_only_rebuilt=tuple(
            RowError(*r)
            for r in _only_in(conn, "row, email, error", errors_new, errors_live, job_id)
        ),
    )


def compare_area(
    conn: sqlite3.Connection,
    area: str,
    fold_tail: TailFolder,
    after_position: int,
    after_version: int = 0,
    job_id: str | None = None,
    limit: int = 20,
) -> Comparison:
    """Catch up, then diff the area with the live projection in the same snapshot."""
    with _immediate(conn, keep=False):
        last = _catch_up(conn, area, fold_tail, after_position, after_version, job_id)
        differing = _differing_jobs(conn, area, job_id)
        diffs = tuple(_job_diff(conn, area, job) for job in differing[:limit])
    return Comparison(position=last, differing=len(differing), diffs=diffs)


def area_view(
    conn: sqlite3.Connection, area: str, job_id: str, errors_limit: int
) -> JobView | None:
    """One job of the area, as GET shows it."""
    row = conn.execute(
        f"SELECT {', '.join(JOB_COLUMNS)} FROM {_table('jobs', area)} WHERE job_id = ?",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    state = state_from_row(row)
    if state.status is not Status.SUCCESS:
        return JobView(state)
    errors = conn.execute(
        f"SELECT row, email, error FROM {_table('job_errors', area)} "
        "WHERE job_id = ? ORDER BY row LIMIT ?",
        (job_id, errors_limit),
    )
    return JobView(state, tuple(RowError(*e) for e in errors))


