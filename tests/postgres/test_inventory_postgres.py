"""Inventory on a real PostgreSQL schema: the log's trigger, the append-only log's one exception,
prunes beside appends, replay after a prune, and migrating a database of the previous version."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from jobtracker.domain.codec import encode_fields
from jobtracker.domain.errors import JobIdTaken, RowAlreadyReported
from jobtracker.domain.events import (
    Created,
    Event,
    NewEvent,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
)
from jobtracker.domain.listing import JobQuery
from jobtracker.domain.projection import plan_append, start
from jobtracker.store import replay
from jobtracker.store.base import utc_now
from jobtracker.store.migrate import migrations
from jobtracker.store.postgres import PostgresStore
from jobtracker.store.postgres.inventory import log_moment, prune_in
from jobtracker.store.rows import JOB_COLUMNS, state_to_row
from tests.conditions import until_async
from tests.pg_database import create_database, drop_database
from tests.postgres.conftest import OpenStore

OWNER = "key_owner"
#: The tables that hold something of a job, keyed by its id.
PER_JOB_TABLES = (
    "events", "jobs", "job_row_bits", "job_errors", "job_deadlines", "job_index", "job_labels"
)


def new(event: Event) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), event)


def rows_of(count: int, start_at: int = 0) -> list[NewEvent]:
    """Row outcomes, every fifth a failure (so the job has row errors too)."""
    return [
        new(RowFailed(r, "x@uni.edu", "bad") if r % 5 == 0 else RowSucceeded(r, "a@uni.edu", True))
        for r in range(start_at, start_at + count)
    ]


async def finished_job(
    store: PostgresStore, job_id: str, events: int = 5, labels: dict[str, str] | None = None
) -> None:
    """A finished job of `events` events: created, started, rows, succeeded."""
    await store.create_job(job_id, Created(owner=OWNER, total=events - 3, labels=labels))
    await store.append(job_id, [new(Started()), *rows_of(events - 3), new(Succeeded())])


async def fetch(url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def left_of(url: str, job_ids: Sequence[str]) -> dict[str, int]:
    """How many rows each per-job table still holds of these jobs."""
    counts = {}
    for table in PER_JOB_TABLES:
        rows = await fetch(url, f"SELECT count(*) FROM {table} WHERE job_id = ANY($1)", job_ids)
        counts[table] = rows[0][0]
    return counts


async def test_the_log_trigger_indexes_each_job_once_whichever_way_it_is_written(
    open_store: OpenStore, pg_url: str
) -> None:
    """Creations on two stores (grouped and not), appends on both commit paths and a created
    event written by hand: one index row per job, as its created event says, labels and all."""
    grouped, single = await open_store(), await open_store(group_commit=False)
    job_ids = [f"job-{n}" for n in range(24)]

    async def create_and_report(n: int, job_id: str) -> None:
        store = (grouped, single)[n % 2]
        labels = {"batch": str(n % 3), "kind": "csv"} if n % 2 else None
        await store.create_job(job_id, Created(owner=OWNER, total=4, labels=labels))
        await store.append(job_id, [new(Started()), *rows_of(2)])
        retried = [*rows_of(1, start_at=1), *rows_of(1, start_at=2)]  # row 1 again: redone
        with pytest.raises(RowAlreadyReported):
            await store.append(job_id, retried)

    await asyncio.gather(*(create_and_report(n, job_id) for n, job_id in enumerate(job_ids)))
    await execute(
        pg_url,
        "INSERT INTO events (job_id, version, event_id, type, data) VALUES ('by-hand', 1, "
        """'by-hand-1', 'created', '{"owner": "key_other", "labels": {"team": "x"}}')""",
    )

    indexed = await fetch(
        pg_url, "SELECT job_id, owner, created_at, labels FROM job_index ORDER BY job_id"
    )
    created = await fetch(
        pg_url,
        # the view shows the log's stored fields: positional (owner first, labels sixth) when
        # the store wrote them, the object given when written by hand
        "SELECT job_id, coalesce(data ->> 0, data ->> 'owner'), recorded_at, "
        "CASE jsonb_typeof(data) WHEN 'array' THEN data -> 5 ELSE data -> 'labels' END "
        "FROM events WHERE version = 1 ORDER BY job_id",
    )
    assert indexed == created
    assert len(indexed) == len(job_ids) + 1
    labels = await fetch(pg_url, "SELECT job_id, key, value FROM job_labels ORDER BY 1, 2")
    assert labels == sorted(
        [(job_id, key, value) for n, job_id in enumerate(job_ids) if n % 2
         for key, value in (("batch", str(n % 3)), ("kind", "csv"))]
        + [("by-hand", "team", "x")]
    )
    listed = await grouped.list_jobs(OWNER, JobQuery(labels=(("batch", "1"), ("kind", "csv"))),
                                     None, 100)
    assert sorted(j.state.job_id for j in listed) == ["job-1", "job-13", "job-19", "job-7"]


async def test_only_a_prune_deletes_events_and_only_those_of_the_jobs_it_takes(
    open_store: OpenStore, pg_url: str
) -> None:
    """Plain SQL cannot delete events, of a running job or a finished one; a prune deletes all
    of a finished job (and nothing else), leaving its tombstone. UPDATE stays refused."""
    store = await open_store()
    await finished_job(store, "old", events=9, labels={"keep": "no"})
    await store.create_job("live", Created(owner=OWNER, labels={"keep": "yes"}))
    await store.append("live", [new(Started()), *rows_of(3)])
    for statement in (
        "DELETE FROM log WHERE job_key = (SELECT job_key FROM log_jobs WHERE job_id = 'live')",
        "DELETE FROM log WHERE job_key = (SELECT job_key FROM log_jobs WHERE job_id = 'old')",
        "UPDATE log SET types = '\\x02' WHERE job_key = "
        "(SELECT job_key FROM log_jobs WHERE job_id = 'old')",
        "DELETE FROM log_jobs WHERE job_id = 'old'",
        "TRUNCATE log",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await execute(pg_url, statement)
    kept = await left_of(pg_url, ["live"])
    last_event = (await store.read_job_events("old", 8, 1))[0]

    done = await store.prune(utc_now(), 10)

    assert (done.jobs, done.events) == (1, 9)
    assert set((await left_of(pg_url, ["old"])).values()) == {0}
    assert await left_of(pg_url, ["live"]) == kept
    tombstone = await store.find_tombstone("old")
    assert tombstone is not None
    assert (tombstone.owner, tombstone.finished_at) == (OWNER, last_event.recorded_at)
    assert await store.pruned_since(0) == [(1, "old")]
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await execute(pg_url, "UPDATE events SET type = 'started' WHERE job_id = 'live'")


async def test_an_open_prune_holds_no_lock_that_work_on_other_jobs_waits_for(
    pg_url: str, open_store: OpenStore
) -> None:
    """While a prune's transaction stands open, after all its deletes, appends to other jobs
    (both commit paths), creations, reads, listings and the deadline sweep all go through on a
    store whose statements give up after 200 ms of waiting for a lock."""
    await open_store()  # migrates
    impatient = PostgresStore(f"{pg_url}&lock_timeout=200ms", pool_size=4)
    await impatient.open()
    conn = await asyncpg.connect(pg_url)
    try:
        for n in range(5):
            await finished_job(impatient, f"old-{n}", events=8, labels={"k": "v"})
        for n in range(3):
            await impatient.create_job(f"live-{n}", Created(owner=OWNER, labels={"k": "v"}))
            await impatient.append(f"live-{n}", [new(Started())])
        transaction = conn.transaction()
        await transaction.start()
        pruned = await prune_in(conn, log_moment(utc_now()), 100)
        assert pruned.jobs == 5

        started = time.monotonic()
        await asyncio.gather(*(impatient.append(f"live-{n}", rows_of(4)) for n in range(3)))
        with pytest.raises(RowAlreadyReported):  # redone in a transaction, under row locks
            await impatient.append("live-0", rows_of(2, start_at=3))
        await impatient.create_job("fresh", Created(owner=OWNER, labels={"k": "v"}))
        listed = await impatient.list_jobs(OWNER, JobQuery(labels=(("k", "v"),)), None, 50)
        assert len(listed) == 9  # the prune has not committed: its jobs are still there
        assert await impatient.get_job("old-0", 10) is not None
        assert await impatient.find_tombstone("old-0") is None
        await impatient.read_log(0, 1000)
        await impatient.job_counts()
        await impatient.due_deadlines(time.time() + 10_000, 100)
        await impatient.record_heartbeats({"live-1": time.time()})
        assert time.monotonic() - started < 5

        await transaction.commit()
        assert await impatient.find_tombstone("old-0") is not None
        assert await impatient.get_job("old-0", 10) is None
        for n in range(3):
            view = await impatient.get_job(f"live-{n}", 10)
            assert view is not None
            assert view.state.version == 6
    finally:
        await conn.close()
        await impatient.close()


async def test_appends_to_other_jobs_stay_quick_and_whole_while_a_prune_runs(
    open_store: OpenStore,
) -> None:
    """200 finished jobs of 50 events pruned in batches while four workers append to their own
    jobs: no append takes more than 100 ms (or, on a machine that busy, longer than one before
    the prune began), and every acknowledged event is there after."""
    store, pruner = await open_store(), await open_store()
    for first in range(0, 200, 20):
        await asyncio.gather(*(finished_job(store, f"old-{n}", events=50)
                               for n in range(first, first + 20)))
    cutoff = utc_now()
    workers = [f"live-{n}" for n in range(4)]
    for job_id in workers:
        await store.create_job(job_id, Created(owner=OWNER))
        await store.append(job_id, [new(Started())])
    acknowledged = dict.fromkeys(workers, 0)
    latencies: dict[bool, list[float]] = {False: [], True: []}
    pruning = asyncio.Event()
    done = asyncio.Event()

    async def work(job_id: str) -> None:
        while not done.is_set():
            began = time.perf_counter()
            await store.append(job_id, rows_of(1, start_at=acknowledged[job_id]))
            latencies[pruning.is_set()].append(time.perf_counter() - began)
            acknowledged[job_id] += 1

    async def prune_all() -> tuple[int, float]:
        await asyncio.sleep(0.2)  # the workers are under way
        pruning.set()
        removed, began = 0, time.perf_counter()
        try:
            while (batch := await pruner.prune(cutoff, 20)).jobs:
                removed += batch.jobs
        finally:
            done.set()
        return removed, time.perf_counter() - began

    *_, (removed, took) = await asyncio.gather(*(work(job_id) for job_id in workers), prune_all())

    assert removed == 200
    slowest, before = max(latencies[True]), max(latencies[False])
    print(f"\nprune of 200 jobs x 50 events: {took * 1000:.0f} ms; {len(latencies[True])} "
          f"appends meanwhile, slowest {slowest * 1000:.1f} ms (before: {before * 1000:.1f} ms)")
    assert slowest < max(0.1, before)
    for job_id, count in acknowledged.items():
        view = await store.get_job(job_id, 10)
        assert view is not None
        assert view.state.version == count + 2
        assert len(await store.read_job_events(job_id, 0, 10_000)) == count + 2


async def blocked_on_a_lock(url: str) -> bool:
    """Whether some session of this database waits for a lock right now."""
    rows = await fetch(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'",
    )
    return bool(rows[0][0])


async def test_a_creation_racing_the_prune_of_its_id_is_refused_as_expired(
    open_store: OpenStore, pg_url: str
) -> None:
    """A creation that waited for a prune taking a job of the same id answers 409 'expired'
    once the prune commits, and writes nothing."""
    store = await open_store()
    await finished_job(store, "again")
    conn = await asyncpg.connect(pg_url)
    try:
        async with conn.transaction():
            await prune_in(conn, log_moment(utc_now()), 10)
            creating = asyncio.create_task(store.create_job("again", Created(owner=OWNER)))
            await until_async(lambda: blocked_on_a_lock(pg_url), "the creation waits")
        with pytest.raises(JobIdTaken, match="expired"):
            await creating
    finally:
        await conn.close()
    assert set((await left_of(pg_url, ["again"])).values()) == {0}
    with pytest.raises(JobIdTaken, match="expired"):
        await store.create_job("again", Created(owner=OWNER))


class PrunesFirst:
    """A store that prunes every finished job just before its replay makes an area live or
    compares it: the area was filled while the pruned jobs were still in the log."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def _prune(self) -> None:
        while (await self._store.prune(utc_now(), 100)).jobs:
            pass

    async def swap_in(self, *args: Any, **options: Any) -> int:
        await self._prune()
        return await self._store.swap_in(*args, **options)

    async def compare_area(self, *args: Any, **options: Any) -> Any:
        await self._prune()
        return await self._store.compare_area(*args, **options)


async def test_a_replay_that_read_jobs_before_their_prune_does_not_bring_them_back(
    open_store: OpenStore, pg_url: str
) -> None:
    """A rebuild and a verify whose scratch area still holds jobs pruned since: the rebuild
    leaves them pruned, and neither counts them as differences."""
    store = await open_store()
    await store.create_job("kept", Created(owner=OWNER))
    await store.append("kept", [new(Started()), *rows_of(3)])
    for round_ in ("rebuild", "verify"):
        for n in range(3):
            await finished_job(store, f"{round_}-{n}", events=7)
        if round_ == "rebuild":
            await replay.rebuild(PrunesFirst(store), chunk=5)  # type: ignore[arg-type]
        else:
            checked = await replay.verify(PrunesFirst(store), chunk=5)  # type: ignore[arg-type]
            assert checked.comparison is not None
            assert checked.comparison.differing == 0
        gone = [f"{round_}-{n}" for n in range(3)]
        assert set((await left_of(pg_url, gone)).values()) == {0}
    after = await replay.verify(store)
    assert after.comparison is not None
    assert after.comparison.differing == 0
    assert [row[0] for row in await fetch(pg_url, "SELECT job_id FROM jobs")] == ["kept"]


async def previous_version_database(url: str) -> None:
    """A schema migrated up to the version before inventory, holding two jobs the old way."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations "
            "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for migration in migrations("postgres"):
            if migration.name < "0007":
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (name) VALUES ($1)", migration.name
                    )
        for job_id, day, events in (("older", "01", [Succeeded()]), ("newer", "02", [])):
            created = Created(owner=OWNER)
            items = [new(event) for event in events]
            state = plan_append(start(job_id, created), items, {}).batch.state if items else (
                start(job_id, created))
            for version, event in enumerate([created, *events], start=1):
                await conn.execute(
                    "INSERT INTO events (job_id, version, event_id, type, data, recorded_at) "
                    "VALUES ($1, $2, $3, $4, $5::jsonb, $6)",
                    job_id, version, f"{job_id}-{version}", event.TYPE, encode_fields(event),
                    log_moment(f"2026-11-{day}T00:00:0{version}.000000Z"),
                )
            await conn.execute(
                f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}, updated_position) "
                f"VALUES ({', '.join(f'${n + 1}' for n in range(len(JOB_COLUMNS)))}, "
                "(SELECT max(position) FROM events WHERE job_id = $1))",
                *state_to_row(state),
            )
    finally:
        await conn.close()


async def test_migrating_a_database_of_the_previous_version_indexes_its_jobs(
    pg_url: str,
) -> None:
    """Jobs created before inventory existed are listed after the upgrade, newest first, with
    their creation times, and can be pruned; the rest of the projection still verifies."""
    await previous_version_database(pg_url)
    store = PostgresStore(pg_url, pool_size=2)
    await store.open()
    try:
        listed = await store.list_jobs(OWNER, JobQuery(), None, 10)
        assert [(j.state.job_id, j.created_at, j.labels) for j in listed] == [
            ("newer", "2026-11-02T00:00:01.000000Z", None),
            ("older", "2026-11-01T00:00:01.000000Z", None),
        ]
        assert listed[1].updated_at == "2026-11-01T00:00:02.000000Z"
        verified = await replay.verify(store)
        assert verified.comparison is not None
        assert verified.comparison.differing == 0
        done = await store.prune("2026-11-15T00:00:00.000000Z", 10)
        assert (done.jobs, done.events) == (1, 2)
        assert [j.state.job_id for j in await store.list_jobs(OWNER, JobQuery(), None, 10)] == [
            "newer"
        ]
    finally:
        await store.close()


async def test_steady_retention_keeps_the_database_from_growing() -> None:
    """Cycles of new finished jobs, each pruning the cycle before: the space the prune frees is
    used again (a prune run ends with a VACUUM, which autovacuum, off on some servers, may not
    have done yet), so the log's size levels off instead of growing cycle after cycle.

    In a database of its own: VACUUM frees only rows no open transaction of the same database
    may still see, and another test's leftover session must not decide this one."""
    name, pg_url = await create_database("jobtracker_steady")
    store = PostgresStore(pg_url, pool_size=2)
    await store.open()
    try:
        await _steady_cycles(store, pg_url)
    finally:
        await store.close()
        await drop_database(name)


async def _steady_cycles(store: PostgresStore, pg_url: str) -> None:
    from jobtracker.store.retention import prune_all

    sizes = []
    for cycle in range(8):
        began = utc_now()
        if cycle:  # the previous cycle's jobs, all finished before this one began
            jobs, _ = await prune_all(store, log_moment(began), 25)
            assert jobs == 60
        for n in range(60):
            await finished_job(store, f"c{cycle}-{n}", events=40)
        [(size,)] = await fetch(pg_url, "SELECT sum(pg_total_relation_size(t)) FROM "
                                "unnest(ARRAY['log', 'log_ids', 'log_text_ids', 'log_jobs']) t")
        size = int(size)
        sizes.append(size)

    assert sizes[-1] <= 1.3 * sizes[2], sizes
