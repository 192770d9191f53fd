"""How appends reach the SQLite tables: table by table, whatever the number of requests.

`Rows` gathers what one transaction writes (events in their stored form, `domain/stored.py`; row
marks as bits, row errors, job rows) and writes it with one statement per table. Every write goes
through it: a job's creation, a single append, and a whole group under group commit. Written one
request at a time, a group of small requests costs about six statements each (savepoint, state,
events, row marks, projection, release), every one a trip through the sqlite3 module with the
GIL held. Nearly every group is plain: new events for rows with no outcome yet. `write_together`
plans such a group in Python first, each request on the state the previous one left, and writes it
as one `Rows`. Anything unusual (a refusal, a re-sent event id, a row reported twice) makes it give
up, and the caller undoes it and takes the careful path, one savepoint per request.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from functools import cache
from itertools import chain
from typing import Any

import orjson

from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.events import Created, NewEvent
from jobtracker.domain.projection import AppendPlan, plan_append
from jobtracker.domain.state import JobState
from jobtracker.domain.stored import STORED_ROWS, pack_event_id, pack_time
from jobtracker.store.base import AppendResult, result_of
from jobtracker.store.group import AppendRequest
from jobtracker.store.rows import JOB_COLUMNS, Remembered, state_from_row, state_to_row
from jobtracker.store.sqlite import row_bits

#: Jobs an append writes to: their rows, and their keys in the log (`WHERE` follows).
SELECT_JOB_AND_KEY = (
    f"SELECT {', '.join(f'j.{column}' for column in JOB_COLUMNS)}, k.job_key "  # noqa: S608
    "FROM jobs j JOIN log_jobs k ON k.job_id = j.job_id WHERE "
)
_SELECT_JOBS = SELECT_JOB_AND_KEY + "j.job_id IN (SELECT value FROM json_each(?))"  # noqa: S608
_INSERT_JOBS = f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}, updated_position) VALUES "  # noqa: S608
_UPDATE_JOB = (
    "UPDATE jobs SET "  # noqa: S608
    + ", ".join(f"{c} = ?" for c in (*JOB_COLUMNS[1:], "updated_position"))
    + " WHERE job_id = ?"
)
_INSERT_EVENTS = "INSERT INTO log (job_key, version, event_id, type, data, at) VALUES "
_INSERT_LOG_JOB = "INSERT INTO log_jobs (job_id) VALUES (?)"
_SELECT_KEYS = (
    "SELECT job_id, job_key FROM log_jobs WHERE job_id IN (SELECT value FROM json_each(?))"
)
# The inventory of a created job (migration 0006's tables), filed by the write that creates it
# (until migration 0008, a trigger on `log` did it, its WHEN evaluated for every row appended).
_INSERT_INDEX = "INSERT INTO job_index (job_id, owner, created_at, labels) VALUES (?, ?, ?, ?)"
_INSERT_LABELS = (
    "INSERT INTO job_labels (owner, key, value, created_at, job_id) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_ERRORS = "INSERT INTO job_errors (job_id, row, email, error) VALUES "

#: Rows per multi-row INSERT at most; 64 x 7 parameters stay under SQLite's oldest limit (999).
WIDEST_INSERT = 64


# One INSERT with many rows' VALUES costs SQLite and the sqlite3 module about 40% less per row
# than `executemany`, which runs the statement once per row (bind, step, reset). A batch is sent
# in statements of 64 rows, then of the powers of two its remainder is made of, so a connection
# only ever prepares seven shapes of each statement.
def insert_rows(
    conn: sqlite3.Connection,
    head: str,
    rows: Sequence[tuple[Any, ...]],
    first: Mapping[Any, Any] | None = None,
) -> int:
    """Insert `rows` (tuples of one width, in order) with `head` (`INSERT INTO t (...) VALUES `),
    each row's first value replaced by what `first` maps it to, if given; return the rowid of
    the last."""
    done = last = 0
    while left := len(rows) - done:
        size = WIDEST_INSERT if left >= WIDEST_INSERT else 1 << (left.bit_length() - 1)
        part, width = rows[done : done + size], len(rows[done])
        values = [*chain.from_iterable(part)]
        if first is not None:
            values[::width] = [first[value] for value in values[::width]]
        cursor = conn.execute(_values(head, width, size), values)
        last = cursor.lastrowid or 0
        done += size
    return last


@cache
def _values(head: str, width: int, rows: int) -> str:
    return head + ", ".join([f"({', '.join('?' * width)})"] * rows)


def file_created(
    conn: sqlite3.Connection, jobs: Sequence[tuple[str, str, Mapping[str, str] | None, str]]
) -> None:
    """File new jobs in the inventory, each as (job id, owner, labels or None, creation time)."""
    conn.executemany(_INSERT_INDEX, [
        (job_id, owner, at, None if labels is None else orjson.dumps(labels).decode())
        for job_id, owner, labels, at in jobs])
    if labelled := [(owner, key, value, at, job_id)
                    for job_id, owner, labels, at in jobs for key, value in (labels or {}).items()]:
        conn.executemany(_INSERT_LABELS, labelled)


class NotPlain(Exception):
    """The group needs the careful path: some request is not a plain append of new events."""


class Rows:
    """What one transaction writes, gathered table by table, then written one statement each."""

    def __init__(self, now: str, keys: dict[str, int] | None = None) -> None:
        self.now = now
        #: Each job's key in `log_jobs`, as far as the caller read them; `write` reads the rest.
        self.keys = {} if keys is None else keys
        self._at = pack_time(now)
        self.events: list[tuple[Any, ...]] = []
        self.marks: row_bits.Bits = {}
        self.errors: list[tuple[str, int, str, str]] = []
        self.states: dict[str, JobState] = {}
        self._created: dict[str, Created] = {}
        #: Each job's newest event, as its index in `events`.
        self._newest: dict[str, int] = {}

    def add_events(self, job_id: str, first_version: int, items: Sequence[NewEvent]) -> None:
        """Events of one job, numbered from `first_version`."""
        add, forms, pack_id, at = self.events.append, STORED_ROWS, pack_event_id, self._at
        dumps = orjson.dumps
        for version, item in enumerate(items, start=first_version):
            event = item.event
            form, values = forms[type(event)]
            add((job_id, version, pack_id(item.event_id, bytearray), form,
                 dumps(values(event)).decode(), at))
        self._newest[job_id] = len(self.events) - 1

    def add_job(self, job_id: str, item: NewEvent, state: JobState) -> None:
        """A new job: its `created` event and its first state."""
        assert isinstance(item.event, Created), "a job starts with its `created` event"
        self.add_events(job_id, 1, [item])
        self.states[job_id] = state
        self._created[job_id] = item.event

    def add_plan(self, job_id: str, plan: AppendPlan) -> None:
        """An append's new events, row marks, row errors and resulting job row.

        `RowMarkedTwice` if an earlier plan gathered here already marked one of its rows.
        """
        if not plan.new:
            return  # only re-sends: nothing to write
        self.add_events(job_id, plan.first_version, plan.new)
        row_bits.add(self.marks, job_id, plan.batch.marks)
        self.errors.extend((job_id, e.row, e.email, e.error) for e in plan.batch.row_errors)
        self.states[job_id] = plan.batch.state

    def write(self, conn: sqlite3.Connection) -> None:
        """Write everything gathered; the job rows last, since they point at their newest event.

        `RowMarkedTwice` (an `IntegrityError`, like a unique key's) if a row already had a mark.

        Statements with nothing to write are skipped: each is a trip through the GIL.
        """
        if not self.events:
            return  # only re-sends: every state is as it was
        last_position = insert_rows(conn, _INSERT_EVENTS, self.events, self._job_keys(conn))
        if self._created:
            file_created(conn, [
                (job_id, created.owner, None if created.labels is None else dict(created.labels),
                 self.now) for job_id, created in self._created.items()])
        if self.marks:
            row_bits.write_new(conn, self.marks)
        if self.errors:
            insert_rows(conn, _INSERT_ERRORS, self.errors)
        self._write_jobs(conn, last_position - len(self.events) + 1)

    # The log names a job by its integer key. Giving each row its key, rather than a subquery on
    # `log_jobs` per row, took a twentieth off an SDK row's append (a cursor opened, a search of
    # the unique index and the job id bound as text, per row).
    def _job_keys(self, conn: sqlite3.Connection) -> dict[str, int]:
        """Every job with events here, by its key: new jobs' keys made, the rest read."""
        keys = self.keys
        for job_id in self._created:
            # `job_key` is the table's INTEGER PRIMARY KEY, that is its rowid.
            key = conn.execute(_INSERT_LOG_JOB, (job_id,)).lastrowid
            assert key is not None, "an INSERT into a rowid table sets lastrowid"
            keys[job_id] = key
        if missing := [job_id for job_id in self._newest if job_id not in keys]:
            keys.update(conn.execute(_SELECT_KEYS, (orjson.dumps(missing).decode(),)))
            if lost := [job_id for job_id in missing if job_id not in keys]:
                raise sqlite3.IntegrityError(f"jobs appended to have no key in `log_jobs`: {lost}")
        return keys

    def _write_jobs(self, conn: sqlite3.Connection, first_position: int) -> None:
        """Each job's row, pointing at its newest event. Inside one write transaction the events
        got consecutive positions (AUTOINCREMENT: the largest so far, plus one), in order, so the
        newest's is known without reading it back."""
        created, changed = [], []
        for job_id, state in self.states.items():
            row, position = state_to_row(state), first_position + self._newest[job_id]
            if job_id in self._created:
                created.append((*row, position))
            else:
                changed.append((*row[1:], position, job_id))
        if created:
            insert_rows(conn, _INSERT_JOBS, created)
        if changed and conn.executemany(_UPDATE_JOB, changed).rowcount != len(changed):
            raise sqlite3.IntegrityError("a job appended to has no row in `jobs`")


class KnownStates:
    """Job states as this connection's own plain groups left them, so the next group for the same
    jobs need not read them back.

    They hold only while nothing else has written: no other connection has committed (SQLite's
    `data_version`, which a connection's own commits leave alone, is unchanged), this connection
    has changed no row since (`total_changes`: a careful append, a creation, a rolled-back group
    all move it) and no table was swapped (`schema_version`: a replay renames its rebuilt tables
    into place). A group checks all three inside its write transaction, where no other writer can
    commit, and forgets everything when any moved. States a group planned count only once its
    COMMIT returned.
    """

    def __init__(self) -> None:
        self._remembered = Remembered()
        self._staged: dict[str, JobState] = {}
        #: (data_version, schema_version, total_changes) when the remembered states were true;
        #: what `current` read; and what a staged group's commit will make true.
        self._valid_at: tuple[int, int, int] | None = None
        self._seen: tuple[int, int, int] | None = None
        self._staged_at: tuple[int, int, int] | None = None

    def current(self, conn: sqlite3.Connection, job_ids: set[str]) -> dict[str, JobState]:
        """Inside a write transaction: the remembered states of `job_ids` that still hold."""
        self._seen = self._mark(conn)
        if self._seen != self._valid_at:
            self._remembered.clear()
            self._valid_at = None
        return self._remembered.states(job_ids)

    def stage(self, conn: sqlite3.Connection, states: dict[str, JobState]) -> None:
        """After `current`, in the same transaction: the states the group just wrote, to
        remember if it commits. Only this connection's own change count can have moved since."""
        assert self._seen is not None, "stage() follows current() in the same transaction"
        data_version, schema_version, _ = self._seen
        self._staged = states
        self._staged_at = (data_version, schema_version, conn.total_changes)

    def committed(self) -> None:
        """The transaction committed: what it staged is the truth now."""
        if self._staged_at is None:
            return
        self._remembered.keep(self._staged)
        self._valid_at, self._staged, self._staged_at = self._staged_at, {}, None

    def rolled_back(self) -> None:
        """The transaction was undone: forget what it staged."""
        self._staged, self._staged_at = {}, None

    @staticmethod
    def _mark(conn: sqlite3.Connection) -> tuple[int, int, int]:
        data_version, schema_version = conn.execute(_VERSIONS).fetchone()
        return int(data_version), int(schema_version), conn.total_changes


_VERSIONS = (
    "SELECT (SELECT data_version FROM pragma_data_version()), "
    "(SELECT schema_version FROM pragma_schema_version())"
)


def write_together(
    conn: sqlite3.Connection, requests: Sequence[AppendRequest], now: str, known: KnownStates
) -> list[AppendResult]:
    """Plan every request, then write the group; raises `NotPlain` (or an IntegrityError a
    unique key raised) when the careful path must decide. The caller undoes any partial write."""
    job_ids = {job_id for job_id, _ in requests}
    states, keys = known.current(conn, job_ids), {}
    if len(states) < len(job_ids):
        keys = _states(conn, job_ids - states.keys(), states)
    rows = Rows(now, keys)
    results: list[AppendResult] = []
    for job_id, items in requests:
        state = states.get(job_id)
        if state is None:
            raise NotPlain(job_id)
        try:
            plan = plan_append(state, items, {}, frozenset())
        except JobtrackerError as exc:  # a re-send may explain a refusal: the careful path sees
            raise NotPlain(job_id) from exc
        rows.add_plan(job_id, plan)
        states[job_id] = plan.batch.state
        results.append(result_of(plan))
    rows.write(conn)
    known.stage(conn, states)
    return results


def _states(
    conn: sqlite3.Connection, job_ids: set[str], states: dict[str, JobState]
) -> dict[str, int]:
    """Read `job_ids`' states into `states`; their keys in the log."""
    keys = {}
    for row in conn.execute(_SELECT_JOBS, (orjson.dumps(sorted(job_ids)).decode(),)):
        states[row[0]], keys[row[0]] = state_from_row(row[:-1]), row[-1]
    return keys
