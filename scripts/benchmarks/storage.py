"""Bytes per event: what the log costs on disk, measured with `Store.storage_stats` (`jobtracker
stats`).

Each round writes the same realistic jobs through the store's own append path (UUID job ids, the
SDK's UUIDv7 event ids, server timestamps, 500-event batches): per row one outcome (one in ten a
failure) and, for a success, its e-mail; a progress report every 100 rows. SQLite is measured after
`VACUUM` (file size / events), PostgreSQL as `pg_total_relation_size('events')` / events. The
reference is the events' own JSON payload, the bytes of information each one carries: the ratio is
the layout's overhead. Issue #28's targets are absolute (<= 110 bytes on SQLite, <= 140 on
PostgreSQL); when a leaner layout lands, its "before" figure is this module's subject on the old
schema. Not covered: the write-ahead log, and webhook queues (a sidecar file on SQLite).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jobtracker.domain.codec import encode_fields
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
from jobtracker.store import make_store
from jobtracker.store.base import StorageStats

from .base import BenchConfig, Benchmark, Round
from .get import postgres_unavailable
from .postgres import scratch_database

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
        email = f"alumno{row}@universidad.edu"
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


async def measured(url: str) -> StorageStats:
    """The store's own figures, as `jobtracker stats` prints them."""
    store = make_store(url)
    await store.open()
    try:
        return await store.storage_stats()
    finally:
        await store.close()


def _round(stats: StorageStats, size: int, payload: int, target: float) -> Round:
    per_event = size / stats.events
    log_share = {each.name: each.bytes / stats.events for each in stats.relations
                 if each.table == "events"}
    return Round(
        per_event, payload / stats.events,
        extras={"bytes_per_event": per_event, "events": stats.events, "jobs": stats.jobs,
                "target_bytes": target,
                "log_bytes_per_event": stats.log_bytes / stats.events,
                **{f"in_{name}": value for name, value in log_share.items()}},
    )


def run_sqlite(config: BenchConfig) -> Round:
    """Fill a file, VACUUM it, divide its size by its events."""
    events = QUICK_EVENTS if config.quick else FULL_EVENTS
    with tempfile.TemporaryDirectory(dir=config.workdir) as folder:
        path = Path(folder) / "storage.db"
        payload = asyncio.run(fill(f"sqlite:///{path}", events))
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        stats = asyncio.run(measured(f"sqlite:///{path}"))
        return _round(stats, path.stat().st_size, payload, SQLITE_TARGET)


def run_postgres(config: BenchConfig) -> Round:
    """Fill a database of its own; the log with its indexes over its events."""
    events = QUICK_EVENTS if config.quick else FULL_EVENTS

    async def measure() -> Round:
        async with scratch_database() as url:
            payload = await fill(url, events)
            stats = await measured(url)
            return _round(stats, stats.log_bytes, payload, POSTGRES_TARGET)

    return asyncio.run(measure())


BENCHMARKS = [
    Benchmark(
        name="storage-sqlite",
        subject="SQLite file bytes per event after VACUUM (1,000,000 events, jobs of 1,000 rows)",
        reference="the events' JSON payload bytes per event (the information they carry)",
        unit="bytes/event",
        target=f"<= {SQLITE_TARGET:.0f} bytes per event (issue #28)",
        run=run_sqlite,
        meets=lambda _ratio, extras: extras["bytes_per_event"] <= SQLITE_TARGET,
        higher_is_better=False,
    ),
    Benchmark(
        name="storage-postgresql",
        subject="pg_total_relation_size('events') per event (1,000,000 events)",
        reference="the events' JSON payload bytes per event (the information they carry)",
        unit="bytes/event",
        target=f"<= {POSTGRES_TARGET:.0f} bytes per event (issue #28)",
        run=run_postgres,
        meets=lambda _ratio, extras: extras["bytes_per_event"] <= POSTGRES_TARGET,
        higher_is_better=False,
        unavailable=postgres_unavailable,
    ),
]
