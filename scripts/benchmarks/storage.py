"""Bytes per event: what the log costs on disk, measured with `Store.storage_stats` (`jobtracker
stats`).

Each round writes the same realistic jobs through the store's own append path (UUID job ids, the
SDK's UUIDv7 event ids, server timestamps, 500-event batches): per row one outcome (one in ten a
failure) and, for a success, its e-mail (`r123@uni.edu`: payloads of about 45 bytes of JSON, as
issue #28 measured); a progress report every 100 rows. Issue #28's targets are absolute (<= 110
bytes on SQLite, <= 140 on PostgreSQL).

SQLite: the file's size after `VACUUM` over its events, for the lean log; the reference is the
same events and projection in a file at migration 0006 (the layout before #28), each row as that
release wrote it, rebuilt from the lean file in the same run. PostgreSQL: the total relation size
(heap, TOAST, indexes) of the lean log's tables (migration 0010) / events; the reference is the
same events in a database at migration 0009, one `events` row each as that release stored them,
copied in log order in the same run; the events' own JSON payload (the information they carry) is
an extra, and so is the log's cost when every append carries one event (`one_event_appends`: 8
writers, 1/50 of the events). Not covered: the write-ahead log, and webhook queues (a sidecar
file on SQLite).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg

from jobtracker.cli.stats import read_stats
from jobtracker.domain.codec import decode_stored, encode_fields, stored_version
from jobtracker.domain.events import (
    Created,
    EmailSent,
    Event,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    new_event_ids,
    new_job_id,
)
from jobtracker.domain.stored import form_of, unpack_event_id, unpack_time
from jobtracker.store import make_store
from jobtracker.store.base import StorageStats
from jobtracker.store.migrate import migrations
from jobtracker.store.postgres.stats import LOG_TABLES as PG_LOG_TABLES
from jobtracker.store.sqlite.lean import LEAN_LOG
from jobtracker.store.sqlite.stats import LOG_TABLES

from .base import BenchConfig, Benchmark, Round
from .get import postgres_unavailable
from .postgres import at_old_layout, scratch_database

ROWS_PER_JOB = 1000
BATCH = 500
FULL_EVENTS = 1_000_000
QUICK_EVENTS = 20_000
SQLITE_TARGET = 110.0
POSTGRES_TARGET = 140.0


def job_events(rows: int) -> Iterator[Event]:
    """One job's events after its creation, in the order a worker reports them."""
    yield Started()
    for row in range(1, rows + 1):
        email = f"r{row}@uni.edu"
        if row % 10 == 0:
            yield RowFailed(row, email, "Invalid email: " + email)
        else:
            yield RowSucceeded(row, email, internal=row % 3 == 0)
            yield EmailSent(row, email)
        if row % 100 == 0:
            yield ProgressReported(row, rows, None)
    yield Succeeded()


def _batches(events: list[Event]) -> Iterator[list[NewEvent]]:
    for start in range(0, len(events), BATCH):
        chunk = events[start : start + BATCH]
        yield [NewEvent(event_id, event)
               for event_id, event in zip(new_event_ids(len(chunk)), chunk, strict=True)]


async def fill(url: str, events: int) -> int:
    """Write jobs until at least `events` events are logged; the payload bytes written."""
    store = make_store(url)
    await store.open()
    written = payload = 0
    try:
        while written < events:
            job_id = new_job_id()
            created = Created(owner="key_bench", total=ROWS_PER_JOB, label="bench")
            await store.create_job(job_id, created)
            body = list(job_events(ROWS_PER_JOB))
            for batch in _batches(body):
                await store.append(job_id, batch)
            written += 1 + len(body)
            payload += len(encode_fields(created)) + sum(map(len, map(encode_fields, body)))
    finally:
        await store.close()
    return payload


def _round(
    stats: StorageStats, size: int, reference: float, target: float, tables: frozenset[str],
    **more: float,
) -> Round:
    per_event = size / stats.events
    log_share = {each.name: each.bytes / stats.events for each in stats.relations
                 if each.table in tables}
    return Round(
        per_event, reference,
        extras={"bytes_per_event": per_event, "events": stats.events, "jobs": stats.jobs,
                "target_bytes": target,
                "log_bytes_per_event": stats.log_bytes / stats.events, **more,
                **{f"in_{name}": value for name, value in log_share.items()}},
    )


def _vacuumed(path: Path) -> int:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return path.stat().st_size


def run_sqlite(config: BenchConfig) -> Round:
    """Fill a file, VACUUM it, divide its size by its events; the same for its events and
    projection on the old layout."""
    events = QUICK_EVENTS if config.quick else FULL_EVENTS
    with tempfile.TemporaryDirectory(dir=config.workdir) as folder:
        path, old = Path(folder) / "storage.db", Path(folder) / "old-layout.db"
        payload = asyncio.run(fill(f"sqlite:///{path}", events))
        size = _vacuumed(path)
        old_log_bytes = old_layout_copy(path, old)
        old_size = _vacuumed(old)
        stats = asyncio.run(read_stats(f"sqlite:///{path}"))
        return _round(stats, size, old_size / stats.events, SQLITE_TARGET, LOG_TABLES,
                      old_layout_bytes_per_event=old_size / stats.events,
                      old_log_bytes_per_event=old_log_bytes / stats.events,
                      payload_bytes_per_event=payload / stats.events)


#: Tables the old layout's figure copies from the lean file as they are (the inventory is filled
#: by the old log's own trigger).
_PROJECTION = ("api_keys", "jobs", "job_row_bits", "job_errors", "job_deadlines")


def old_layout_copy(lean_file: Path, old: Path) -> int:
    """The lean file's events and projection in a new file at migration 0006, each event as the
    old layout stored it (text ids and times, keyed JSON); the bytes of its log after VACUUM."""
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    for migration in migrations("sqlite"):
        if migration.name < LEAN_LOG:
            conn.executescript(f"BEGIN; INSERT INTO schema_migrations VALUES ('{migration.name}', "
                               f"''); {migration.sql}\n;COMMIT;")
    conn.execute("ATTACH ? AS lean", (str(lean_file),))
    conn.execute("BEGIN")
    rows = conn.execute(
        "SELECT l.position, k.job_id, l.version, l.event_id, l.type, l.data, l.at "
        "FROM lean.log l JOIN lean.log_jobs k ON k.job_key = l.job_key ORDER BY l.position")
    writer = conn.cursor()
    while chunk := rows.fetchmany(50_000):
        writer.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           [_old_row(*row) for row in chunk])
    for table in _PROJECTION:
        conn.execute(f"INSERT INTO {table} SELECT * FROM lean.{table}")
    conn.execute("COMMIT")
    conn.execute("DETACH lean")
    conn.execute("VACUUM")
    (log_bytes,) = conn.execute(
        "SELECT sum(pgsize) FROM dbstat WHERE aggregate = TRUE AND name IN "
        "(SELECT name FROM sqlite_schema WHERE tbl_name = 'events')").fetchone()
    conn.close()
    return int(log_bytes)


def _old_row(
    position: int, job_id: str, version: int, event_id: bytes | str, form: int | str,
    data: str, at: int | str,
) -> tuple[object, ...]:
    """A lean row as the old layout's columns, in its order."""
    kind, schema = form_of(form)
    event = decode_stored(kind, schema, data)
    return (position, job_id, version, unpack_event_id(event_id), kind, schema,
            encode_fields(event), unpack_time(at))


async def old_layout_postgres(lean_url: str, old_url: str) -> int:
    """The lean database's events in another database at migration 0009 (the layout before #28),
    each as that release stored it (text ids, keyed JSON, one row per event), written in log
    order; the bytes of its log (`events` with TOAST and indexes)."""
    store = make_store(lean_url)
    await store.open()
    conn = await asyncpg.connect(old_url)
    try:
        await at_old_layout(conn)
        after = 0
        while page := await store.read_log(after, 20_000):
            await conn.copy_records_to_table("events", columns=_OLD_COLUMNS, records=[
                (e.job_id, e.version, e.event_id, e.event.TYPE, stored_version(e.event),
                 encode_fields(e.event), dt.datetime.fromisoformat(e.recorded_at))
                for e in page])
            after = page[-1].position
        return int(await conn.fetchval("SELECT pg_total_relation_size('events')"))
    finally:
        await conn.close()
        await store.close()


async def one_event_appends(url: str, events: int, writers: int = 8) -> float:
    """Log bytes per event when every append carries one event (a worker posting each event as
    it happens): `writers` concurrent writers, a job each, group commit on."""
    store = make_store(url)
    await store.open()
    try:
        async def writer(job_id: str, count: int) -> None:
            await store.create_job(job_id, Created(owner="key_bench", total=count))
            for event in itertools.islice(job_events(count), count - 1):
                await store.append(job_id, [NewEvent(new_event_ids(1)[0], event)])

        await asyncio.gather(*(writer(new_job_id(), events // writers) for _ in range(writers)))
    finally:
        await store.close()
    stats = await read_stats(url)
    return stats.log_bytes / stats.events


_OLD_COLUMNS = ("job_id", "version", "event_id", "type", "schema_version", "data", "recorded_at")


def run_postgres(config: BenchConfig) -> Round:
    """Fill a database of its own; the log with its indexes over its events; the same events on
    the old layout in another database."""
    events = QUICK_EVENTS if config.quick else FULL_EVENTS

    async def measure() -> Round:
        async with scratch_database() as url, scratch_database() as old_url:
            payload = await fill(url, events)
            stats = await read_stats(url)
            old_bytes = await old_layout_postgres(url, old_url)
        async with scratch_database() as single_url:
            single = await one_event_appends(single_url, events // 50)
        return _round(stats, stats.log_bytes, old_bytes / stats.events, POSTGRES_TARGET,
                      frozenset(PG_LOG_TABLES),
                      old_layout_bytes_per_event=old_bytes / stats.events,
                      payload_bytes_per_event=payload / stats.events,
                      one_event_appends_bytes_per_event=single)

    return asyncio.run(measure())


BENCHMARKS = [
    Benchmark(
        name="storage-sqlite",
        subject="SQLite file bytes per event after VACUUM (1,000,000 events, jobs of 1,000 rows)",
        reference="the same events and projection on the layout before #28 (migration 0006), "
        "same run",
        unit="bytes/event",
        target=f"<= {SQLITE_TARGET:.0f} bytes per event (issue #28)",
        run=run_sqlite,
        meets=lambda _ratio, extras: extras["bytes_per_event"] <= SQLITE_TARGET,
        higher_is_better=False,
    ),
    Benchmark(
        name="storage-postgresql",
        subject="pg_total_relation_size of the log's tables (log, log_ids, log_text_ids, "
        "log_jobs) per event (1,000,000 events, jobs of 1,000 rows)",
        reference="the same events on the layout before #28 (migration 0009: `events`, one row "
        "per event), written in log order into another database, same run",
        unit="bytes/event",
        target=f"<= {POSTGRES_TARGET:.0f} bytes per event (issue #28)",
        run=run_postgres,
        meets=lambda _ratio, extras: extras["bytes_per_event"] <= POSTGRES_TARGET,
        higher_is_better=False,
        unavailable=postgres_unavailable,
    ),
]
