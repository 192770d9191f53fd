"""Inventory (issue #19): listing a key's jobs page by page, and retention's prune.

`inventory-pages-*`: `GET /api/v1/jobs` through a real `jobtracker serve`, for an owner with
1,000,000 jobs (20,000 in quick mode) against an owner with 1,000 jobs in the same store, their
creation times interleaved with the big owner's. Both owners' jobs are written by direct SQL
through the real schema: one `created` event each (version 1, the data the store writes) and its
`jobs` row, each filed in `job_index` as the store files any job (SQLite: `lean_rows.write_rows`,
through `group.file_created`; PostgreSQL: the `events` view's insert); the benchmark checks
that the index holds every job and that paging through the first 200 pages over HTTP shows
exactly the expected ids in order (and that the token it reaches equals one built from the
cursor) before anything is timed. Timed: the first page (limit 50) for the big owner, its 200th
page (a token whose cursor is the 9,950th newest job), and the reference, the first page for the
small owner; wrk on one connection (-t1 -c1, so each figure is one request's latency), 2 s legs
taken in turns, median over legs of wrk's p50 (p99 as extras). Not covered: label, status and
time filters (other index ranges), concurrent listings, pages while jobs are being created, jobs
that are not PENDING (every filled job is PENDING: the listing's cost does not depend on it, the
body size barely does), a cold cache (the store was just written; the OS holds it).

`inventory-steady-*`: retention's steady state. 20 cycles (quick: 8) of: 2,000 jobs (quick: 200)
created through the store API, each with labels and 50 events (created, started, 45 rows
succeeded and 2 failed, so marks and errors are written, succeeded; one append per job, 16 jobs
at a time), then `prune_all` of every job finished before the previous cycle began (the
product's batch and pause), and the job counts folded as a /metrics scrape would. Subject: the
database's size after the last cycle; reference: its size after cycle 5. SQLite: main file and
WAL after `PRAGMA wal_checkpoint(TRUNCATE)`; PostgreSQL: `pg_total_relation_size` summed over
every table of the schema (log, projection, marks, errors, deadlines, index, labels,
tombstones, counts). The benchmark never vacuums; notes say whether PostgreSQL's autovacuum is
on. Tombstones stay by design and grow by one small row per pruned job: they are counted in.
Not covered: appends racing the prune (here they take turns), jobs of very different sizes,
`serve --retention` itself (the same `prune_all`, run by the server), long-lived data that
fragments the free space.

`inventory-get-during-prune-*`: GET of one running job (PROGRESS, 60 rows) through a real
`jobtracker serve`, wrk -t1 -c32, while a separate process prunes 1,000,000 events of finished
jobs (20,000 jobs x 50 events; quick: 1,000 x 50) with `prune_all(store, now, 100, 0.05)`, the
server's own batch and pause (quick mode: batch 10, or the prune would end within one leg).
The finished jobs are written by direct SQL (events, `jobs` rows with the terminal status and
the last event's position, their row marks); their events are a day old. wrk runs in 2 s legs,
started only while the prune runs; a leg counts only when it ended before the prune did, so
every counted leg lies wholly inside the prune. Reference: the same legs without a prune, half
before it and half after it. Not covered: GETs of the jobs being pruned (410 once gone),
appends during the prune, a prune run by `serve --retention` inside the serving process (here
it is another process, as a `jobtracker prune` command would be).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import orjson

from jobtracker.domain.events import (
    Created,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    new_event_ids,
)
from jobtracker.domain.listing import Cursor, JobQuery, log_time, page_token
from jobtracker.server.inventory import BATCH_PAUSE, Retention
from jobtracker.server.settings import Settings
from jobtracker.store import SqliteStore, Store, make_store
from jobtracker.store.keys import issue_key
from jobtracker.store.retention import prune_all

from .base import BenchConfig, Benchmark, Round
from .get import jobtracker_server, postgres_store, postgres_unavailable, sqlite_store
from .httpload import WRK_MISSING, Load, LoadResult, fetch, have_wrk, python, run_load
from .lean_rows import write_rows

Factory = Callable[[Path], contextlib.AbstractContextManager[str]]

PAGE = 50
DEEP_PAGE = 200
SMALL = 1_000


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


async def _open(url: str) -> Store:
    store = make_store(url)
    await store.open()
    return store


async def _new_key(url: str, name: str) -> tuple[str, str]:
    """A fresh owner key in the store at `url`: (key id, secret)."""
    store = await _open(url)
    try:
        issued = await issue_key(store, name)
        return issued.record.key_id, issued.secret
    finally:
        await store.close()


def _created_data(owner: str, total: int | None = None) -> str:
    """The data of a `created` event as the store writes it (no labels)."""
    return orjson.dumps({"label": None, "owner": owner, "total": total}).decode()


# --- listing pages ---------------------------------------------------------------------------


def _big_id(n: int) -> str:
    return f"big-{n:07d}"


def _small_id(n: int) -> str:
    return f"small-{n:05d}"


def _big_moment(base: dt.datetime, n: int) -> dt.datetime:
    """The big owner's job n was created n milliseconds after `base`."""
    return base + dt.timedelta(milliseconds=n)


def _small_moment(base: dt.datetime, k: int, big: int) -> dt.datetime:
    """The small owner's jobs are spread among the big owner's, half a millisecond off theirs."""
    return base + dt.timedelta(microseconds=k * (big // SMALL) * 1000 + 500)


def _fill_pages_sqlite(url: str, big_owner: str, big: int, small_owner: str,
                       base: dt.datetime) -> None:
    conn = sqlite3.connect(_sqlite_path(url))
    try:
        conn.execute("PRAGMA synchronous = OFF")
        with conn:
            before = conn.execute("SELECT coalesce(max(position), 0) FROM log").fetchone()[0]
            big_data, small_data = _created_data(big_owner), _created_data(small_owner)
            write_rows(conn, ((_big_id(n), 1, f"bench-{_big_id(n)}", "created", 1, big_data,
                               log_time(_big_moment(base, n))) for n in range(big)))
            write_rows(conn, ((_small_id(k), 1, f"bench-{_small_id(k)}", "created", 1,
                               small_data, log_time(_small_moment(base, k, big)))
                              for k in range(SMALL)))
            conn.execute(
                "INSERT INTO jobs (job_id, owner, status, version, updated_position) "
                "SELECT k.job_id, json_extract(l.data, '$[0]'), 'PENDING', 1, l.position "
                "FROM log l JOIN log_jobs k ON k.job_key = l.job_key "
                "WHERE l.position > ? ORDER BY l.position", (before,),
            )
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def _fill_pages_postgres(url: str, big_owner: str, big: int, small_owner: str,
                               base: dt.datetime) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            before = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            fill = (
                "INSERT INTO events (job_id, version, event_id, type, data, recorded_at) "
                "SELECT $1 || lpad(n::text, $2, '0'), 1, 'bench-' || $1 || n, 'created', "
                "jsonb_build_object('label', NULL, 'owner', $3::text, 'total', NULL), "
                "$4::timestamptz + n * $5::interval + $6::interval "
                "FROM generate_series(0, $7::int - 1) AS n ORDER BY n"
            )
            await conn.execute(fill, "big-", 7, big_owner, base,
                               dt.timedelta(milliseconds=1), dt.timedelta(0), big)
            await conn.execute(fill, "small-", 5, small_owner, base,
                               dt.timedelta(milliseconds=big // SMALL),
                               dt.timedelta(microseconds=500), SMALL)
            await conn.execute(
                "INSERT INTO jobs (job_id, owner, status, version, updated_position) "
                "SELECT job_id, data ->> 'owner', 'PENDING', 1, position "
                "FROM events WHERE position > $1 ORDER BY position", before,
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _indexed(url: str, owner: str) -> int:
    """How many jobs of `owner` were filed in `job_index`."""
    if _is_sqlite(url):
        conn = sqlite3.connect(_sqlite_path(url))
        try:
            return int(conn.execute("SELECT count(*) FROM job_index WHERE owner = ?",
                                    (owner,)).fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return int(await pg.fetchval("SELECT count(*) FROM job_index WHERE owner = $1", owner))
    finally:
        await pg.close()


def _page(base_url: str, key: str, token: str | None = None) -> dict:
    url = f"{base_url}/api/v1/jobs?limit={PAGE}"
    if token is not None:
        url += f"&page_token={token}"
    status, body = fetch(url, {"X-API-Key": key}, timeout=30)
    if status != 200:
        raise RuntimeError(f"GET {url} answered {status}: {body[:300]!r}")
    page: dict = orjson.loads(body)
    return page


def _check_listing(base_url: str, big_key: str, big_owner: str, big: int, small_key: str,
                   cursor: Cursor) -> tuple[str, list[str]]:
    """Page through the big owner's first `DEEP_PAGE` pages and the small owner's first page,
    checking every id; return the 200th page's token and what differed from expectations that
    is not an error."""
    notes: list[str] = []
    token = None
    for number in range(1, DEEP_PAGE + 1):
        page = _page(base_url, big_key, token)
        first = big - 1 - (number - 1) * PAGE
        expected = [_big_id(n) for n in range(first, first - PAGE, -1)]
        ids = [job["job_id"] for job in page["jobs"]]
        if ids != expected:
            raise RuntimeError(f"page {number} of the big owner lists {ids[:3]}..., "
                               f"expected {expected[:3]}...")
        if number == DEEP_PAGE:
            break
        token = page["next_page_token"]
        if not token:
            raise RuntimeError(f"page {number} of the big owner has no next_page_token")
    assert token is not None
    built = page_token(big_owner, JobQuery(), cursor)
    if built != token:
        notes.append(f"the 200th page's token reached by paging ({token}) differs from one built "
                     f"from the cursor ({built}); the benchmark times the one paging gave")
    small = _page(base_url, small_key)
    ids = [job["job_id"] for job in small["jobs"]]
    if ids != [_small_id(k) for k in range(SMALL - 1, SMALL - 1 - PAGE, -1)]:
        raise RuntimeError(f"the small owner's first page lists {ids[:3]}...")
    return token, notes


def pages_round(make: Factory) -> Callable[[BenchConfig], Round]:
    """First and 200th page for a big owner against the first page of a 1,000-job owner."""

    def run(config: BenchConfig) -> Round:
        big = 20_000 if config.quick else 1_000_000
        seconds, reps = (1, 1) if config.quick else (2, 4)
        with tempfile.TemporaryDirectory(prefix="pages-", dir=config.workdir) as tmp:
            workdir = Path(tmp)
            with make(workdir) as url:
                big_owner, big_key = asyncio.run(_new_key(url, "big owner"))
                small_owner, small_key = asyncio.run(_new_key(url, "small owner"))
                base = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
                began = time.monotonic()
                if _is_sqlite(url):
                    _fill_pages_sqlite(url, big_owner, big, small_owner, base)
                else:
                    asyncio.run(_fill_pages_postgres(url, big_owner, big, small_owner, base))
                fill_s = time.monotonic() - began
                print(f"  filled {big:,} + {SMALL:,} jobs in {fill_s:.0f} s", flush=True)
                indexed = asyncio.run(_indexed(url, big_owner))
                if indexed != big:
                    raise RuntimeError(f"job_index holds {indexed} jobs of the big owner, "
                                       f"not {big}: not every created job was filed")
                deep = big - (DEEP_PAGE - 1) * PAGE  # the 9,950th newest job
                cursor = Cursor(log_time(_big_moment(base, deep)), _big_id(deep))
                with jobtracker_server(url, workdir) as server:
                    token, notes = _check_listing(server, big_key, big_owner, big, small_key,
                                                  cursor)
                    legs = {
                        "first": (f"{server}/api/v1/jobs?limit={PAGE}", big_key),
                        "deep": (f"{server}/api/v1/jobs?limit={PAGE}&page_token={token}",
                                 big_key),
                        "ref": (f"{server}/api/v1/jobs?limit={PAGE}", small_key),
                    }
                    results: dict[str, list[LoadResult]] = {name: [] for name in legs}
                    for url_, key in legs.values():
                        run_load(url_, {"X-API-Key": key}, Load(1, 1, 1))
                    order = list(legs)
                    for rep in range(reps):
                        for name in order[rep % 3:] + order[:rep % 3]:
                            url_, key = legs[name]
                            results[name].append(
                                run_load(url_, {"X-API-Key": key}, Load(1, 1, seconds)))
        p50 = {name: statistics.median(r.p50_ms for r in rs) for name, rs in results.items()}
        p99 = {name: statistics.median(r.p99_ms for r in rs) for name, rs in results.items()}
        return Round(
            subject=p50["first"],
            reference=p50["ref"],
            extras={
                "page200_ms": p50["deep"],
                "page200_ratio": p50["deep"] / p50["ref"],
                "p99_ms": p99["first"],
                "page200_p99_ms": p99["deep"],
                "ref_p99_ms": p99["ref"],
                "fill_s": fill_s,
            },
            notes=tuple(notes) + (() if have_wrk() else (WRK_MISSING,)),
        )

    return run


# --- steady state ----------------------------------------------------------------------------

ROWS = 47  # + created, started, succeeded = 50 events a job
FAILED_ROWS = frozenset({12, 37})
AT_ONCE = 16


def _job_events(job_id: str) -> list[NewEvent]:
    events: list = [Started()]
    for row in range(ROWS):
        email = f"user{row}@example.com"
        if row in FAILED_ROWS:
            events.append(RowFailed(row=row, email=email, error=f"Invalid email: {email}"))
        else:
            events.append(RowSucceeded(row=row, email=email, internal=row % 3 == 0))
    events.append(Succeeded())
    return [NewEvent(event_id, event)
            for event_id, event in zip(new_event_ids(len(events)), events, strict=True)]


async def _run_cycle(store: Store, owner: str, cycle: int, jobs: int) -> None:
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(n: int) -> None:
        job_id = f"c{cycle:03d}-{n:05d}"
        async with gate:
            await store.create_job(job_id, Created(owner=owner, total=ROWS,
                                                   labels={"cycle": str(cycle), "kind": "bench"}))
            done = await store.append(job_id, _job_events(job_id))
            if done.version != ROWS + 3:
                raise RuntimeError(f"{job_id} is at version {done.version}, not {ROWS + 3}")

    await asyncio.gather(*(one(n) for n in range(jobs)))


def _sqlite_size(url: str) -> int:
    path = _sqlite_path(url)
    conn = sqlite3.connect(path)
    try:
        for _ in range(50):
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("wal_checkpoint(TRUNCATE) stayed busy")
    finally:
        conn.close()
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


async def _pg_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                            "ORDER BY tablename")
    return [row["tablename"] for row in rows]


async def _pg_size(url: str) -> tuple[int, dict[str, int]]:
    conn = await asyncpg.connect(url)
    try:
        sizes = {
            name: int(await conn.fetchval("SELECT pg_total_relation_size($1::regclass)",
                                          f'"{name}"'))
            for name in await _pg_tables(conn)
        }
        return sum(sizes.values()), sizes
    finally:
        await conn.close()


async def _pg_vacuum_facts(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        autovacuum = await conn.fetchval("SHOW autovacuum")
        rows = await conn.fetch(
            "SELECT relname, n_dead_tup, autovacuum_count, vacuum_count FROM pg_stat_user_tables "
            "WHERE relname IN ('events', 'jobs', 'job_row_bits', 'job_index') ORDER BY relname")
        stats = "; ".join(f"{r['relname']}: {r['n_dead_tup']:,} dead tuples, "
                          f"{r['autovacuum_count']} autovacuums, {r['vacuum_count']} vacuums"
                          for r in rows)
        return f"PostgreSQL autovacuum is {autovacuum} on this server; at the end: {stats}"
    finally:
        await conn.close()


def _size(url: str) -> int:
    return _sqlite_size(url) if _is_sqlite(url) else asyncio.run(_pg_size(url))[0]


async def _steady(url: str, cycles: int, jobs: int, early: int,
                  sizes: dict[int, int]) -> tuple[int, list[float]]:
    store = await _open(url)
    try:
        owner = (await issue_key(store, "steady owner")).record.key_id
        batch = Settings().prune_batch
        starts: list[dt.datetime] = []
        took: list[float] = []
        pruned_total = 0
        for cycle in range(1, cycles + 1):
            starts.append(dt.datetime.now(dt.UTC))
            began = time.monotonic()
            await _run_cycle(store, owner, cycle, jobs)
            written = time.monotonic() - began
            pruned = (0, 0)
            if cycle >= 2:
                pruned = await prune_all(store, starts[-2], batch, BATCH_PAUSE)
            pruned_total += pruned[0]
            await store.job_counts()  # what a /metrics scrape does
            took.append(time.monotonic() - began)
            if cycle in (early, cycles):
                sizes[cycle] = await asyncio.to_thread(_size, url)
            print(f"  cycle {cycle}: {jobs} jobs written in {written:.1f} s, pruned {pruned[0]} "
                  f"jobs ({pruned[1]} events) in {took[-1] - written:.1f} s"
                  + (f", size {sizes[cycle] / 2**20:.1f} MiB" if cycle in sizes else ""),
                  flush=True)
        expected = jobs * (cycles - 2) if cycles >= 2 else 0
        if pruned_total != expected:
            raise RuntimeError(f"pruned {pruned_total} jobs over the run, expected {expected}")
        return pruned_total, took
    finally:
        await store.close()


def steady_round(make: Factory) -> Callable[[BenchConfig], Round]:
    """Size after the last cycle against size after cycle 5."""

    def run(config: BenchConfig) -> Round:
        cycles, jobs = (8, 200) if config.quick else (20, 2_000)
        early = 5
        with tempfile.TemporaryDirectory(prefix="steady-", dir=config.workdir) as tmp, \
                make(Path(tmp)) as url:
            sizes: dict[int, int] = {}
            pruned, took = asyncio.run(_steady(url, cycles, jobs, early, sizes))
            notes: list[str] = []
            extras = {"size_at_5_mib": sizes[early] / 2**20,
                      "size_at_last_mib": sizes[cycles] / 2**20,
                      "tombstones": float(pruned),
                      "cycle_s": statistics.median(took)}
            if not _is_sqlite(url):
                _total, tables = asyncio.run(_pg_size(url))
                extras["tombstones_mib"] = tables.get("job_tombstones", 0) / 2**20
                notes.append(asyncio.run(_pg_vacuum_facts(url)))
                biggest = sorted(tables.items(), key=lambda item: -item[1])[:5]
                notes.append("PostgreSQL, biggest tables after the last cycle: " + ", ".join(
                    f"{name} {size / 2**20:.1f} MiB" for name, size in biggest))
        return Round(subject=sizes[cycles] / 2**20, reference=sizes[early] / 2**20,
                     extras=extras, notes=tuple(notes))

    return run


# --- GET during a prune ----------------------------------------------------------------------

PER_JOB = 50  # created, started, 47 rows, succeeded
RUNNING_ROWS = 60
ALL_ROWS_BITS = (1 << ROWS) - 1


def _finished_rows(owner: str, jobs: int, base: dt.datetime) -> Iterator[tuple[str, int, str, str,
                                                                               int, str, str]]:
    created = _created_data(owner, ROWS)
    for n in range(jobs):
        job_id = f"old-{n:06d}"
        moment = base + dt.timedelta(seconds=n)
        for version in range(1, PER_JOB + 1):
            if version == 1:
                kind, data = "created", created
            elif version == 2:
                kind, data = "started", "{}"
            elif version == PER_JOB:
                kind, data = "succeeded", "{}"
            else:
                row = version - 3
                kind = "row_succeeded"
                data = f'{{"email":"user{row}@example.com","internal":true,"row":{row}}}'
            at = log_time(moment + dt.timedelta(milliseconds=version))
            yield job_id, version, f"bench-{job_id}-{version}", kind, 1, data, at


def _fill_finished_sqlite(url: str, owner: str, jobs: int, base: dt.datetime) -> None:
    conn = sqlite3.connect(_sqlite_path(url))
    try:
        conn.execute("PRAGMA synchronous = OFF")
        with conn:
            before = conn.execute("SELECT coalesce(max(position), 0) FROM log").fetchone()[0]
            write_rows(conn, _finished_rows(owner, jobs, base))
            conn.execute(
                "INSERT INTO jobs (job_id, owner, status, version, expected_total, successful, "
                "internal_count, updated_position) "
                "SELECT k.job_id, ?, 'SUCCESS', max(l.version), ?, ?, ?, max(l.position) "
                "FROM log l JOIN log_jobs k ON k.job_key = l.job_key "
                "WHERE l.position > ? GROUP BY k.job_id", (owner, ROWS, ROWS, ROWS, before))
            conn.execute(
                "INSERT INTO job_row_bits (job_id, kind, chunk, bits) "
                "SELECT job_id, 'outcome', 0, ? FROM jobs WHERE job_id LIKE 'old-%'",
                (ALL_ROWS_BITS,))
        conn.execute("ANALYZE")
    finally:
        conn.close()


async def _fill_finished_postgres(url: str, owner: str, jobs: int, base: dt.datetime) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            before = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
            await conn.execute(
                "INSERT INTO events (job_id, version, event_id, type, data, recorded_at) "
                "SELECT 'old-' || lpad(n::text, 6, '0'), v, "
                "'bench-old-' || lpad(n::text, 6, '0') || '-' || v, "
                "CASE WHEN v = 1 THEN 'created' WHEN v = 2 THEN 'started' "
                "WHEN v = $4 THEN 'succeeded' ELSE 'row_succeeded' END, "
                "CASE WHEN v = 1 THEN jsonb_build_object('label', NULL, 'owner', $1::text, "
                "'total', $5::int) "
                "WHEN v = 2 OR v = $4 THEN '{}'::jsonb "
                "ELSE jsonb_build_object('email', 'user' || (v - 3) || '@example.com', "
                "'internal', true, 'row', v - 3) END, "
                "$2::timestamptz + n * interval '1 second' + v * interval '1 millisecond' "
                "FROM generate_series(0, $3::int - 1) AS n, generate_series(1, $4::int) AS v "
                "ORDER BY n, v",
                owner, base, jobs, PER_JOB, ROWS)
            await conn.execute(
                "INSERT INTO jobs (job_id, owner, status, version, expected_total, successful, "
                "internal_count, updated_position) "
                "SELECT job_id, $1, 'SUCCESS', max(version), $2, $2, $2, max(position) "
                "FROM events WHERE position > $3 GROUP BY job_id", owner, ROWS, before)
            await conn.execute(
                "INSERT INTO job_row_bits (job_id, kind, chunk, bits) "
                "SELECT job_id, 'outcome', r >> 6, bit_or((1::bigint) << (r & 63)) "
                "FROM jobs, generate_series(0, $1::int - 1) AS r "
                "WHERE job_id LIKE 'old-%' GROUP BY job_id, r >> 6", ROWS)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _running_job(url: str) -> tuple[str, str, str]:
    """An owner key and its running job (PROGRESS, 60 rows reported): (key id, secret, job)."""
    store = await _open(url)
    try:
        issued = await issue_key(store, "bench")
        job_id = "running-job"
        await store.create_job(job_id, Created(owner=issued.record.key_id, total=100))
        events: list = [Started(), ProgressReported(current=RUNNING_ROWS, total=100)]
        events += [RowSucceeded(row=row, email=f"user{row}@example.com", internal=row % 2 == 0)
                   for row in range(RUNNING_ROWS)]
        await store.append(job_id, [NewEvent(i, e) for i, e in
                                    zip(new_event_ids(len(events)), events, strict=True)])
        return issued.record.key_id, issued.secret, job_id
    finally:
        await store.close()


async def _events_left(url: str) -> int:
    if _is_sqlite(url):
        conn = sqlite3.connect(_sqlite_path(url))
        try:
            return int(conn.execute("SELECT count(*) FROM log").fetchone()[0])
        finally:
            conn.close()
    pg = await asyncpg.connect(url)
    try:
        return int(await pg.fetchval("SELECT count(*) FROM events"))
    finally:
        await pg.close()


PRUNER = """
import asyncio, datetime as dt, sys, time
from jobtracker.store.retention import prune_all
from jobtracker.store import make_store

async def main(url, batch, pause):
    store = make_store(url)
    await store.open()
    try:
        print("start", time.monotonic(), flush=True)
        jobs, events = await prune_all(store, dt.datetime.now(dt.UTC), batch, pause)
        print("done", time.monotonic(), jobs, events, flush=True)
    finally:
        await store.close()

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def get_during_prune_round(make: Factory) -> Callable[[BenchConfig], Round]:
    """GET req/s of a running job while another process prunes, against the same without."""

    def run(config: BenchConfig) -> Round:
        jobs = 1_000 if config.quick else 20_000
        seconds = 1 if config.quick else 2
        ref_legs = 2 if config.quick else 6
        # Quick mode's 1,000 jobs would be pruned within one leg at the server's batch of 100:
        # smaller batches make the prune last long enough to measure anything.
        batch = 10 if config.quick else Settings().prune_batch
        with tempfile.TemporaryDirectory(prefix="prune-", dir=config.workdir) as tmp:
            workdir = Path(tmp)
            with make(workdir) as url:
                owner, key, job_id = asyncio.run(_running_job(url))
                base = dt.datetime.now(dt.UTC) - dt.timedelta(days=1, seconds=jobs + 60)
                began = time.monotonic()
                if _is_sqlite(url):
                    _fill_finished_sqlite(url, owner, jobs, base)
                else:
                    asyncio.run(_fill_finished_postgres(url, owner, jobs, base))
                fill_s = time.monotonic() - began
                before = asyncio.run(_events_left(url))
                print(f"  filled {jobs:,} finished jobs ({before:,} events) in {fill_s:.0f} s",
                      flush=True)
                headers = {"X-API-Key": key}
                with jobtracker_server(url, workdir) as server:
                    job_url = f"{server}/api/v1/jobs/{job_id}"
                    status, body = fetch(job_url, headers)
                    if status != 200 or orjson.loads(body)["status"] != "PROGRESS":
                        raise RuntimeError(f"the running job answers {status} {body[:200]!r}")
                    load = Load(1, 32, seconds)
                    run_load(job_url, headers, Load(1, 32, 1))
                    reference = [run_load(job_url, headers, load)
                                 for _ in range(ref_legs // 2)]
                    during, prune_s, pruned, overrun = _legs_during_prune(
                        url, job_url, headers, load, batch, workdir)
                    reference += [run_load(job_url, headers, load)
                                  for _ in range(ref_legs - ref_legs // 2)]
                left = asyncio.run(_events_left(url))
        print("  req/s without a prune: " + ", ".join(f"{r.requests_per_s:,.0f}"
                                                       for r in reference)
              + "; during it: " + ", ".join(f"{r.requests_per_s:,.0f}" for r in during),
              flush=True)
        if left != before - jobs * PER_JOB:
            raise RuntimeError(f"{left} events left after the prune, expected "
                               f"{before - jobs * PER_JOB}")
        notes = [f"prune of {jobs:,} jobs ({pruned:,} events) by a separate process, batch "
                 f"{batch}, pause {BATCH_PAUSE} s; wrk legs of {seconds} s counted only when "
                 "they ended before the prune did"]
        if overrun:
            notes.append(f"{overrun} leg(s) ended after the prune and were not counted")
        if not have_wrk():
            notes.append(WRK_MISSING)
        return Round(
            subject=statistics.median(r.requests_per_s for r in during),
            reference=statistics.median(r.requests_per_s for r in reference),
            extras={
                "prune_s": prune_s,
                "legs_during_prune": float(len(during)),
                "p99_ms": statistics.median(r.p99_ms for r in during),
                "ref_p99_ms": statistics.median(r.p99_ms for r in reference),
                "fill_s": fill_s,
            },
            notes=tuple(notes),
        )

    return run


def _legs_during_prune(url: str, job_url: str, headers: dict[str, str], load: Load, batch: int,
                       workdir: Path) -> tuple[list[LoadResult], float, int, int]:
    """Start the prune, then wrk legs back to back while it runs; keep the legs that ended
    before it did. Returns (kept legs, prune seconds, events pruned, legs not kept)."""
    log = workdir / "prune.err"
    with open(log, "wb") as err:
        pruner = subprocess.Popen(
            [python(), "-c", PRUNER, url, str(batch), str(BATCH_PAUSE)],
            stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert pruner.stdout is not None
        start_line = pruner.stdout.readline().split()
        if not start_line or start_line[0] != "start":
            pruner.wait(timeout=60)
            raise RuntimeError(f"the prune did not start: {log.read_text(errors='replace')}")
        legs: list[tuple[float, LoadResult]] = []
        while pruner.poll() is None:
            result = run_load(job_url, headers, load)
            legs.append((time.monotonic(), result))  # the same clock as the pruner's
        done_line = pruner.stdout.readline().split()
        if pruner.wait() != 0 or not done_line or done_line[0] != "done":
            raise RuntimeError(f"the prune failed: {log.read_text(errors='replace')}")
    finally:
        if pruner.poll() is None:
            pruner.terminate()
            pruner.wait()
    started, ended = float(start_line[1]), float(done_line[1])
    kept = [result for end, result in legs if end <= ended]
    if not kept:
        raise RuntimeError("the prune ended before a single wrk leg did: nothing measured")
    return kept, ended - started, int(done_line[3]), len(legs) - len(kept)


# --- where a server starts watching tombstones ------------------------------------------------

_STARTS = 25


def _tombstoned_file(path: Path, tombstones: int) -> None:
    """A migrated SQLite file holding `tombstones` tombstones (written by hand: a prune of that
    many jobs would take minutes and measure nothing more)."""
    store = SqliteStore(str(path))
    asyncio.run(_open_and_close(store))
    conn = sqlite3.connect(path)
    with conn:
        conn.executemany(
            "INSERT INTO job_tombstones (job_id, owner, finished_at, pruned_at) "
            "VALUES (?, 'owner', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            ((f"pruned-{n:08}",) for n in range(tombstones)))
    conn.close()


async def _open_and_close(store: Store) -> None:
    await store.open()
    await store.close()


async def _median_start_ms(path: Path) -> float:
    """The median time `Retention.start` takes to reach the newest tombstone and swap."""
    store = SqliteStore(str(path))
    await store.open()
    try:
        times = []
        for _ in range(_STARTS):
            began = time.perf_counter()
            tasks = await Retention(store, Settings(), lambda _: None, lambda _: None).start()
            times.append((time.perf_counter() - began) * 1000)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return statistics.median(times)
    finally:
        await store.close()


def watch_start_round(config: BenchConfig) -> Round:
    tombstones = 20_000 if config.quick else 1_000_000
    with tempfile.TemporaryDirectory(prefix="watch_start_") as work:
        many, none = Path(work) / "many.db", Path(work) / "none.db"
        _tombstoned_file(many, tombstones)
        _tombstoned_file(none, 0)
        return Round(subject=asyncio.run(_median_start_ms(many)),
                     reference=asyncio.run(_median_start_ms(none)),
                     extras={"tombstones": float(tombstones)})


# --- the benchmarks --------------------------------------------------------------------------


def _pages_meet(ratio: float, extras: dict[str, float]) -> bool:
    return ratio <= 1.5 and extras["page200_ratio"] <= 1.5


_PAGES = ("GET /api/v1/jobs?limit=50, first page, owner with 1,000,000 jobs, serve, wrk -t1 -c1 "
          "2 s legs in turns, median p50 (extras: its 200th page)")
_PAGES_REF = "the first page of an owner with 1,000 jobs in the same store, same legs"
_STEADY = ("database size after 20 cycles of 2,000 jobs x 50 events, each cycle pruning the "
           "jobs finished before the previous cycle began")
_PRUNE = ("GET of a running job, wrk -t1 -c32 2 s legs, while another process prunes 20,000 "
          "finished jobs (1,000,000 events), prune_all batch 100 pause 0.05 s")
_PRUNE_REF = "the same GET legs without a prune, half before it and half after"


def _variants(kind: str, make: Factory, unavailable: Callable[[], str | None] | None,
              store: str) -> list[Benchmark]:
    return [
        Benchmark(
            name=f"inventory-pages-{kind}",
            subject=f"{_PAGES}, {store}",
            reference=_PAGES_REF,
            unit="ms",
            target="<= 1.5x the reference, first page and 200th page",
            run=pages_round(make),
            meets=_pages_meet,
            higher_is_better=False,
            unavailable=unavailable,
        ),
        Benchmark(
            name=f"inventory-steady-{kind}",
            subject=f"{_STEADY}, {store}",
            reference="the same database's size after cycle 5",
            unit="MiB",
            target="<= 1.3x the reference",
            run=steady_round(make),
            meets=lambda ratio, extras: ratio <= 1.3,
            higher_is_better=False,
            unavailable=unavailable,
        ),
        Benchmark(
            name=f"inventory-get-during-prune-{kind}",
            subject=f"{_PRUNE}, {store}",
            reference=_PRUNE_REF,
            unit="req/s",
            target=">= 0.7x the reference",
            run=get_during_prune_round(make),
            meets=lambda ratio, extras: ratio >= 0.7,
            unavailable=unavailable,
        ),
    ]


def _postgres_inventory_missing() -> str | None:
    reason = postgres_unavailable()
    if reason:
        return reason
    from jobtracker.store.postgres import store as pg_store

    if not hasattr(pg_store.PostgresStore, "pruned_since"):
        return "the PostgreSQL store has no inventory yet (no pruned_since)"
    return None


BENCHMARKS = [
    *_variants("sqlite", sqlite_store, None, "SQLite"),
    *_variants("postgres", postgres_store, _postgres_inventory_missing, "PostgreSQL"),
    Benchmark(
        name="watch-start-sqlite",
        subject="ms for a server to start watching tombstones and replay swaps (Retention.start, "
        f"median of {_STARTS}), SQLite file with 1,000,000 tombstones",
        reference="the same on a file with none",
        unit="ms",
        # A year of retention leaves millions of tombstones; a start must not read them all.
        target="<= 2x the reference",
        run=watch_start_round,
        meets=lambda ratio, extras: ratio <= 2.0,
        higher_is_better=False,
    ),
]
