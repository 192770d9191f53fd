"""PostgreSQL store benchmarks: batched appends vs raw executemany; group commit vs one per event.

Each round creates its own database on $JOBTRACKER_BENCH_PG_URL (default: the local server) and
drops it after, so rounds never see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from jobtracker.domain.codec import encode_fields
from jobtracker.domain.events import Created, NewEvent, RowFailed, RowSucceeded, Started
from jobtracker.store.postgres import PostgresStore

from .base import BenchConfig, Benchmark, Round

#: The same variable the GET benchmark reads.
SERVER_ENV = "JOBTRACKER_BENCH_PG_URL"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
BATCH = 1000
WRITERS = 8


def server_url() -> str:
    """The server the benchmarks create their databases on."""
    return os.environ.get(SERVER_ENV) or DEFAULT_SERVER


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A database of our own for one round; its URL. Dropped afterwards."""
    name = f"jobtracker_bench_{os.getpid()}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server_url())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(server_url())
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def at_old_layout(conn: asyncpg.Connection) -> None:
    """Apply the migrations before PostgreSQL's lean log (0010), each with its record: a database
    as the release before issue #28 left it, one `events` row per event."""
    from jobtracker.store.migrate import migrations
    from jobtracker.store.postgres.lean import LEAN_LOG

    await conn.execute("CREATE TABLE schema_migrations "
                       "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    for migration in migrations("postgres"):
        if migration.name < LEAN_LOG:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)",
                                   migration.name)


#: The old layout's table of events (migration 0001), under a name of its own: the raw writer's
#: reference is the same on either layout of the store.
RAW_EVENTS = """
CREATE TABLE raw_events (
    position       BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id         TEXT        NOT NULL,
    version        BIGINT      NOT NULL CHECK (version >= 1),
    event_id       TEXT        NOT NULL UNIQUE,
    type           TEXT        NOT NULL,
    schema_version INTEGER     NOT NULL DEFAULT 1,
    data           JSONB       NOT NULL,
    recorded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (job_id, version)
)
"""


def row_batch(prefix: str, first_row: int) -> list[NewEvent]:
    """A realistic batch: one event per row, one in ten a failure."""
    batch: list[NewEvent] = []
    for row in range(first_row, first_row + BATCH):
        email = f"recipient{row}@uni.edu"
        event = (
            RowFailed(row, email, "Invalid email")
            if row % 10 == 0
            else RowSucceeded(row, email, internal=row % 2 == 0)
        )
        batch.append(NewEvent(f"{prefix}-{row}", event))
    return batch


async def _timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


def _raw_rows(
    batch: list[NewEvent], first_version: int, job_id: str = "raw-job"
) -> list[tuple[str, int, str, str, str]]:
    """The event rows a store append of `batch` writes, for a job of the raw writer's own."""
    return [
        (job_id, first_version + i, f"raw-{item.event_id}", item.event.TYPE,
         encode_fields(item.event))
        for i, item in enumerate(batch)
    ]


async def _batched_round(config: BenchConfig) -> Round:
    # Store and raw batches alternate, so load from other processes hits both alike.
    batches = 3 if config.quick else 20
    plans = [row_batch("s", n * BATCH) for n in range(batches)]
    raw = [_raw_rows(batch, 2 + n * BATCH) for n, batch in enumerate(plans)]
    subject = reference = 0.0
    async with scratch_database() as url:
        store = PostgresStore(url)
        await store.open()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(RAW_EVENTS)
            await store.create_job("store-job", Created(owner="bench"))
            # One untimed batch each first, on jobs of their own: both sides then time appends on
            # connections that are open, with statements that are prepared (the store opens its
            # commit lane's connection on its first append; the raw side connected above).
            await store.create_job("warm-up", Created(owner="bench"))
            await store.append("warm-up", row_batch("w", 0))
            await _raw_insert(conn, _raw_rows(row_batch("w", 0), 2, "raw-warm-up"))
            for batch, rows in zip(plans, raw, strict=True):
                subject += await _timed(lambda batch=batch: store.append("store-job", batch))
                reference += await _timed(lambda rows=rows: _raw_insert(conn, rows))
        finally:
            await conn.close()
            await store.close()
    events = batches * BATCH
    return Round(subject=events / subject, reference=events / reference)


async def _raw_insert(conn: asyncpg.Connection, rows: list[tuple[str, int, str, str, str]]) -> None:
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO raw_events (job_id, version, event_id, type, data) "
            "VALUES ($1, $2, $3, $4, $5)",
            rows,
        )


async def _writers(store: PostgresStore, per_writer: int) -> float:
    """8 writers, each appending `per_writer` single events to a job of its own; seconds taken."""
    prefix = secrets.token_hex(3)
    for w in range(WRITERS):
        await store.create_job(f"{prefix}-{w}", Created(owner="bench"))

    async def writer(w: int) -> None:
        await store.append(f"{prefix}-{w}", [NewEvent(f"{prefix}-{w}-start", Started())])
        for row in range(per_writer - 1):
            event = RowSucceeded(row, f"r{row}@uni.edu", internal=True)
            await store.append(f"{prefix}-{w}", [NewEvent(f"{prefix}-{w}-{row}", event)])

    async def all_writers() -> None:
        await asyncio.gather(*(writer(w) for w in range(WRITERS)))

    return await _timed(all_writers)


async def _group_commit_round(config: BenchConfig) -> Round:
    # Grouped and one-commit-per-event stints alternate, so load from elsewhere hits both alike.
    stints, per_writer = (2, 25) if config.quick else (4, 100)
    subject = reference = 0.0
    async with scratch_database() as url:
        grouped = PostgresStore(url, pool_size=WRITERS)
        single = PostgresStore(url, pool_size=WRITERS, group_commit=False)
        await grouped.open()
        await single.open()
        try:
            # An untimed stint each first: connections opened on first use (the grouped store's
            # commit lanes, the other's pool) and statements prepared on them are set-up costs,
            # not what commits cost.
            await _writers(single, 10)
            await _writers(grouped, 10)
            for _ in range(stints):
                reference += await _writers(single, per_writer)
                subject += await _writers(grouped, per_writer)
        finally:
            await grouped.close()
            await single.close()
    events = stints * WRITERS * per_writer
    return Round(subject=events / subject, reference=events / reference)


BENCHMARKS: list[Benchmark] = [
    Benchmark(
        name="postgres_batched_append",
        subject=f"PostgresStore.append of {BATCH}-event batches (fold, projection, commit)",
        reference="raw asyncpg executemany of the same event rows into a table like the first "
        "layout's events (one row per event, its three unique keys), same database",
        unit="events/s",
        target=">= 0.6x the reference",
        run=lambda config: asyncio.run(_batched_round(config)),
        meets=lambda ratio, extras: ratio >= 0.6,
    ),
    Benchmark(
        name="postgres_group_commit",
        subject=f"{WRITERS} concurrent single-event writers, group commit",
        reference=f"the same {WRITERS} writers, one transaction per event (group commit off)",
        unit="events/s",
        target=">= 4x the reference",
        run=lambda config: asyncio.run(_group_commit_round(config)),
        meets=lambda ratio, extras: ratio >= 4.0,
    ),
]
