"""The SQLite store's synchronous core: one connection, one transaction per write.

`SqliteLog` is what the asyncio store (`store/sqlite.py`) runs on its threads and, for point reads
and small groups of appends, on its event loop; the SDK's direct transport uses it as is. Every
write runs inside `BEGIN IMMEDIATE`, so writers never deadlock on a lock upgrade; WAL with
`synchronous = FULL`, so an acknowledged append survives power loss.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson

from jobtracker.domain.codec import decode_stored
from jobtracker.domain.errors import JobIdTaken, JobNotFound, JobtrackerError, StoreUnavailable
from jobtracker.domain.events import Created, Event, NewEvent, RecordedEvent, new_event_id
from jobtracker.domain.projection import AppendPlan, plan_append, rows_touched, start
from jobtracker.domain.state import JobState, RowError, RowMark, Status
from jobtracker.domain.stored import form_of, pack_event_id, unpack_event_id, unpack_time
from jobtracker.store.base import (
    AppendResult,
    JobChange,
    JobView,
    expired_id,
    result_of,
    utc_now,
)
from jobtracker.store.group import AppendRequest, CreateOutcome, CreateRequest, Outcome
from jobtracker.store.migrate import missing_migrations
from jobtracker.store.rows import JOB_COLUMNS, state_from_row
from jobtracker.store.sqlite import deadlines, inventory, lean, row_bits
from jobtracker.store.sqlite import rebuild as sqlite_rebuild
from jobtracker.store.sqlite.group import (
    SELECT_JOB_AND_KEY,
    KnownStates,
    NotPlain,
    Rows,
    write_together,
)
from jobtracker.store.sqlite.keys import KeyTable

T = TypeVar("T")

_SELECT_JOB = f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE job_id = ?"  # noqa: S608
_SELECT_JOB_TO_WRITE = SELECT_JOB_AND_KEY + "j.job_id = ?"
#: An event as `_recorded_event` reads it, from `log l` joined to `log_jobs k`.
_EVENT_COLUMNS = "k.job_id, l.version, l.position, l.event_id, l.at, l.type, l.data"
_FROM_LOG = "FROM log l JOIN log_jobs k ON k.job_key = l.job_key"
#: The ids a careful append looks up at once, at most (bound parameters, under SQLite's limit).
_IDS_PER_LOOKUP = 500


#: How long a write waits for another connection (another process) to finish its own.
BUSY_TIMEOUT_S = 30.0


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves), WAL, durable commits."""
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
    )
    conn.execute("PRAGMA journal_mode = WAL")
    # FULL: an acknowledged append survives power loss, not only a process crash.
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _recorded_event(row: Sequence[Any]) -> RecordedEvent:
    job_id, version, position, event_id, at, form, data = row
    event = decode_stored(*form_of(form), data)
    return RecordedEvent(
        job_id, version, position, unpack_event_id(event_id), unpack_time(at), event
    )


class SqliteLog(KeyTable):
    """The SQLite store's synchronous core: one connection, one transaction per write."""

    def __init__(self, path: str, *, clock: Callable[[], str] = utc_now) -> None:
        self.path = path
        self.conn = connect(path)
        self._clock = clock
        self._known_states = KnownStates()

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def migrate(self) -> list[str]:
        """Apply pending migrations; return their names."""
        return lean.migrate(self.conn)

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        self.begin()
        try:
            yield
        except BaseException:
            self.rollback()
            raise
        self.commit()

    def in_transaction(self, write: Callable[..., T], *args: Any) -> T:
        """`write(conn, *args)` in a write transaction of its own; what it returns."""
        with self._immediate():
            return write(self.conn, *args)

    def _quick_else_careful(self, quick: Callable[[], T], careful: Callable[[], T]) -> T:
        """`quick` in a write transaction; if it raises `NotPlain`, `careful` in a new one."""
        try:
            with self._immediate():
                return quick()
        except NotPlain:
            pass
        with self._immediate():
            return careful()

    def _state(self, job_id: str) -> JobState | None:
        row = self.conn.execute(_SELECT_JOB, (job_id,)).fetchone()
        return None if row is None else state_from_row(row)

    def _existing_state(self, job_id: str) -> tuple[JobState, dict[str, int]]:
        """The state of a job appended to, and its key in the log; `JobNotFound` if none."""
        row = self.conn.execute(_SELECT_JOB_TO_WRITE, (job_id,)).fetchone()
        if row is None:
            raise JobNotFound()
        return state_from_row(row[:-1]), {job_id: row[-1]}

    def create_job(self, job_id: str, created: Created) -> tuple[JobState, bool]:
        """Create a job durably, or return the owner's existing one."""
        (outcome,) = self.create_jobs([(job_id, created)])
        if isinstance(outcome, JobtrackerError):
            raise outcome
        return outcome

    def create_jobs(self, requests: Sequence[CreateRequest]) -> list[CreateOutcome]:
        """Create many jobs in one transaction (one durable commit), each as `create_job` would.

        A job id another key holds is refused before anything is written for it, so the refusal
        is that request's outcome and the others still commit.
        """
        with self._immediate():
            return [self._create(job_id, created) for job_id, created in requests]

    def _create(self, job_id: str, created: Created) -> CreateOutcome:
        existing = self._state(job_id)
        if existing is not None:
            if existing.owner != created.owner:
                return JobIdTaken(f"job_id: {job_id!r} is already used by another API key")
            return existing, False
        if inventory.find_tombstone(self.conn, job_id) is not None:
            return JobIdTaken(expired_id(job_id))
        state = start(job_id, created)
        rows = Rows(self._clock())
        rows.add_job(job_id, NewEvent(new_event_id(), created), state)
        rows.write(self.conn)
        deadlines.watch(self.conn, job_id, created, time.time())
        return state, True

    # Appends are first planned as if the log held none of their events and none of their rows had
    # an outcome yet (the usual case), and written at once. The unique keys catch what that missed
    # (a re-sent event id, a row already reported), and a refusal may be explained by a re-send:
    # either way `NotPlain` is raised, the transaction is rolled back, and the appends are planned
    # again in a new one from what the log holds (the careful path, rare). Rolling back the whole
    # transaction rather than a savepoint matters: with a savepoint open, SQLite first copies every
    # page a write touches into a statement journal, which spills to a temporary file past 64 KiB
    # and cost a group of 30 small appends about 12 us each.

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Validate the batch with the fold and write it with its projection, or write nothing."""
        try:
            return self._quick_else_careful(
                lambda: self._append_quickly(job_id, items),
                lambda: self._append_carefully(job_id, items),
            )
        except sqlite3.Error as exc:
            raise store_error(exc) from exc

    def append_group(self, requests: Sequence[AppendRequest]) -> list[Outcome]:
        """Write many appends in one transaction (one durable commit).

        A plain group (the usual one) is written a table at a time (`group`). Otherwise each
        request gets a savepoint: one the fold refuses is rolled back to it and answered with its
        own error, and the others commit together.
        """
        return self._quick_else_careful(
            lambda: self.write_group_quickly(requests),
            lambda: self.write_group_carefully(requests),
        )

    def write_group_quickly(self, requests: Sequence[AppendRequest]) -> list[Outcome]:
        """Inside a write transaction: the group as one plain write, or `NotPlain`, after which
        the caller rolls the transaction back and writes the group carefully in a new one."""
        try:
            return [*write_together(self.conn, requests, self._clock(), self._known_states)]
        except sqlite3.IntegrityError as exc:
            raise NotPlain("a unique key refused the quick plan") from exc

    def write_group_carefully(self, requests: Sequence[AppendRequest]) -> list[Outcome]:
        """Inside a write transaction: each request planned from what the log holds, in a
        savepoint of its own, answered with its result or its own error."""
        return [self._append_in_savepoint(job_id, items) for job_id, items in requests]

    # A write transaction in steps, for a caller that runs them on different threads.

    def begin_now(self) -> bool:
        """Open a write transaction unless another connection is writing: never waits.

        False means another connection (another process) holds the write lock; `begin` waits for
        it. For a caller that must not block, such as an event loop.
        """
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                raise
            return False
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        return True

    def begin(self) -> None:
        """Open a write transaction, waiting up to `BUSY_TIMEOUT_S` for other writers."""
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit the open transaction durably; if that fails, it is rolled back."""
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        self._known_states.committed()

    def rollback(self) -> None:
        """Roll back the open transaction, if there is one."""
        self._known_states.rolled_back()
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def _append_in_savepoint(self, job_id: str, items: Sequence[NewEvent]) -> Outcome:
        self.conn.execute("SAVEPOINT append_request")
        try:
            outcome: Outcome = self._append_carefully(job_id, items)
        except (JobtrackerError, sqlite3.Error) as exc:
            self.conn.execute("ROLLBACK TO append_request")
            outcome = exc if isinstance(exc, JobtrackerError) else store_error(exc)
        self.conn.execute("RELEASE append_request")
        return outcome

    def _append_quickly(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """The usual case, planned as if nothing were recorded; `NotPlain` if that did not hold."""
        state, key = self._existing_state(job_id)
        try:
            return self._write_plan(job_id, plan_append(state, items, {}, frozenset()), key)
        except (JobtrackerError, sqlite3.IntegrityError) as exc:
            raise NotPlain(job_id) from exc

    def _append_carefully(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Planned from the log: the batch's known event ids and its rows' recorded outcomes."""
        state, key = self._existing_state(job_id)
        known = self._known(items)
        recorded = self._recorded(job_id, rows_touched(item.event for item in items))
        return self._write_plan(job_id, plan_append(state, items, known, recorded), key)

    def _known(self, items: Sequence[NewEvent]) -> dict[str, tuple[str, Event]]:
        # Bound one by one: a packed id is a blob, which JSON cannot carry.
        ids = [*dict.fromkeys(pack_event_id(item.event_id) for item in items)]
        known: dict[str, tuple[str, Event]] = {}
        for first in range(0, len(ids), _IDS_PER_LOOKUP):
            part = ids[first : first + _IDS_PER_LOOKUP]
            rows = self.conn.execute(
                "SELECT l.event_id, k.job_id, l.type, l.data "
                f"{_FROM_LOG} WHERE l.event_id IN ({', '.join('?' * len(part))})",
                part,
            )
            known.update(
                (unpack_event_id(eid), (job_id, decode_stored(*form_of(form), data)))
                for eid, job_id, form, data in rows
            )
        return known

    def _recorded(self, job_id: str, rows: set[int]) -> set[RowMark]:
        if not rows:
            return set()
        found = self.conn.execute(
            row_bits.SELECT_MARKED, (job_id, orjson.dumps(sorted(rows)).decode())
        )
        return {RowMark(row, kind) for row, kind in found}

    def _write_plan(self, job_id: str, plan: AppendPlan, key: dict[str, int]) -> AppendResult:
        rows = Rows(self._clock(), key)
        rows.add_plan(job_id, plan)
        rows.write(self.conn)
        return result_of(plan)

    def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """The projection of one job; row errors are read only for a SUCCESS body."""
        state = self._state(job_id)
        if state is None:
            return None
        if state.status is not Status.SUCCESS or state.failed == 0:
            return JobView(state)
        rows = self.conn.execute(
            "SELECT row, email, error FROM job_errors WHERE job_id = ? ORDER BY row LIMIT ?",
            (job_id, errors_limit),
        )
        return JobView(state, tuple(RowError(*row) for row in rows))

    def read_job_events(
        self, job_id: str, after_version: int = 0, limit: int = 1000
    ) -> list[RecordedEvent]:
        """One job's history, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} {_FROM_LOG} "
            "WHERE k.job_id = ? AND l.version > ? ORDER BY l.version LIMIT ?",
            (job_id, after_version, limit),
        )
        return [_recorded_event(row) for row in rows]

    def read_job_errors(
        self, job_id: str, after_row: int = -1, limit: int = 1000
    ) -> list[RowError]:
        """One job's row errors in row order, read by primary-key range."""
        rows = self.conn.execute(
            "SELECT row, email, error FROM job_errors "
            "WHERE job_id = ? AND row > ? ORDER BY row LIMIT ?",
            (job_id, after_row, limit),
        )
        return [RowError(*row) for row in rows]

    def read_log(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """The log in position order."""
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} {_FROM_LOG} "
            "WHERE l.position > ? ORDER BY l.position LIMIT ?",
            (after_position, limit),
        )
        return [_recorded_event(row) for row in rows]

    def changes_since(self, after_position: int, limit: int = 1000) -> list[JobChange]:
        """Jobs with events after `after_position`; SQLite commits in position order, so no gaps."""
        rows = self.conn.execute(
            "SELECT k.job_id, max(l.version), max(l.position) FROM "
            "(SELECT job_key, version, position FROM log WHERE position > ? "
            "ORDER BY position LIMIT ?) l JOIN log_jobs k ON k.job_key = l.job_key "
            "GROUP BY l.job_key ORDER BY max(l.position)",
            (after_position, limit),
        )
        return [JobChange(*row) for row in rows]

    def last_position(self) -> int:
        """The newest position (0 when empty)."""
        return sqlite_rebuild.last_position(self.conn)

    def job_counts(self) -> dict[str, int]:
        """Jobs by status, as the triggers of migration 0004 keep them: five rows, never a count."""
        return {status: int(count) for status, count in self.conn.execute(
            "SELECT status, count FROM job_counts")}

    def missing_migrations(self) -> list[str]:
        """The migrations of this version not applied to the file."""
        applied = self.conn.execute("SELECT name FROM schema_migrations")
        return missing_migrations("sqlite", (name for (name,) in applied))

    def data_version(self) -> int:
        """A number that moves whenever another connection, in any process, commits a change."""
        (version,) = self.conn.execute("PRAGMA data_version").fetchone()
        return int(version)



def sqlite_path(path: str) -> str:
    """Make sure the folder of a database file exists; return the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return path


def store_error(exc: sqlite3.Error) -> StoreUnavailable:
    """A driver error as our own: the one place SQLite errors cross over."""
    error = StoreUnavailable(f"SQLite store error: {exc}")
    error.__cause__ = exc
    return error


def translated(call: Callable[[], T]) -> T:
    """Run `call`, raising a driver error as our own."""
    try:
        return call()
    except sqlite3.Error as exc:
        raise store_error(exc) from exc
