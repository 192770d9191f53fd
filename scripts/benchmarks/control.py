"""Job control: what a reaper's sweep costs as jobs pile up, and what a heartbeat costs.

`sweep-*`: a sweep that ends 100 timed-out jobs in a store with 1,000,000 other running jobs
(20,000 in quick mode) against the same sweep with 1,000. The watch is indexed by next check, so
the sweep should read the 100 and nothing else. The other jobs are written straight into the
projection and the watch (a job row and a watch row each, no events: the sweep reads events only
for the jobs it ends); the 100 are created through the store like any job, then made late.

`heartbeat-sqlite`: POST /heartbeat on a running job against GET of the same job, one server,
32 connections, legs in turns. A heartbeat reads the job like a GET does and writes nothing but a
line in memory (flushed to the store once a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg

from jobtracker.domain.events import Created, NewEvent, Started, new_event_id
from jobtracker.server.control import Heartbeats, Reaper
from jobtracker.server.settings import Settings
from jobtracker.store import Store, make_store
from jobtracker.store.keys import issue_key

from .base import BenchConfig, Benchmark, Round
from .get import jobtracker_server, postgres_store, postgres_unavailable, sqlite_store
from .httpload import WRK_MISSING, Load, LoadResult, fetch, have_wrk, run_load

DUE = 100
SMALL = 1_000
#: Sweeps timed per side in a round, alternating sides.
SWEEPS = 3


def _filler_rows(count: int, now: float) -> Iterator[tuple[str, float]]:
    for n in range(count):
        yield f"filler-{n:07d}", now + 3600 + n % 600


def _fill_sqlite(url: str, count: int, now: float) -> None:
    conn = sqlite3.connect(url.removeprefix("sqlite:///"))
    with conn:
        conn.executemany(
            "INSERT INTO jobs (job_id, owner, status, version, updated_position) "
            "VALUES (?, 'bench', 'STARTED', 2, 0)",
            ((job_id,) for job_id, _ in _filler_rows(count, now)),
        )
        conn.executemany(
            "INSERT INTO job_deadlines (job_id, heartbeat_timeout, next_check) VALUES (?, 600, ?)",
            _filler_rows(count, now),
        )
    conn.close()


async def _fill_postgres(url: str, count: int, now: float) -> None:
    conn = await asyncpg.connect(url)
    try:
        rows = list(_filler_rows(count, now))
        await conn.copy_records_to_table(
            "jobs", columns=["job_id", "owner", "status", "version", "updated_position"],
            records=[(job_id, "bench", "STARTED", 2, 0) for job_id, _ in rows],
        )
        await conn.copy_records_to_table(
            "job_deadlines", columns=["job_id", "heartbeat_timeout", "next_check"],
            records=[(job_id, 600, at) for job_id, at in rows],
        )
        await conn.execute("ANALYZE jobs; ANALYZE job_deadlines")
    finally:
        await conn.close()


async def _make_late(store: Store, url: str, batch: int) -> None:
    """`DUE` running jobs created through the store, whose timeout passed a minute ago."""
    owner = "bench"
    ids = [f"late-{batch}-{n}" for n in range(DUE)]
    for job_id in ids:
        await store.create_job(job_id, Created(owner=owner, timeout=3600))
        await store.append(job_id, [NewEvent(new_event_id(), Started())])
    late = time.time() - 60
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        with conn:
            conn.executemany("UPDATE job_deadlines SET timeout_at = ?, next_check = ? "
                             "WHERE job_id = ?", [(late, late, job_id) for job_id in ids])
        conn.close()
    else:
        pg = await asyncpg.connect(url)
        try:
            await pg.execute("UPDATE job_deadlines SET timeout_at = $1, next_check = $1 "
                             "WHERE job_id = ANY($2::text[])", late, ids)
        finally:
            await pg.close()


async def _timed_sweeps(url: str, filler: int, now: float) -> list[float]:
    if url.startswith("sqlite"):
        _fill_sqlite(url, filler, now)
    else:
        await _fill_postgres(url, filler, now)
    store = make_store(url)
    await store.open()
    try:
        reaper = Reaper(store, Settings(), Heartbeats())
        times = []
        for batch in range(SWEEPS):
            await _make_late(store, url, batch)
            began = time.perf_counter()
            ended = await reaper.sweep(time.time())
            times.append(time.perf_counter() - began)
            if ended != DUE:
                raise RuntimeError(f"the sweep looked at {ended} jobs, not {DUE}")
        return times
    finally:
        await store.close()


async def _migrated(url: str) -> None:
    store = make_store(url)
    await store.open()
    await store.close()


Factory = Callable[[Path], contextlib.AbstractContextManager[str]]


def sweep_round(make: Factory) -> Callable[[BenchConfig], Round]:
    """Sweeps in a big store against sweeps in a small one, same machine, same round."""

    def run(config: BenchConfig) -> Round:
        big = 20_000 if config.quick else 1_000_000
        with tempfile.TemporaryDirectory(prefix="sweep-", dir=config.workdir) as tmp:
            big_dir, small_dir = Path(tmp) / "big", Path(tmp) / "small"
            big_dir.mkdir()
            small_dir.mkdir()
            with make(big_dir) as big_url, make(small_dir) as small_url:
                now = time.time()
                asyncio.run(_migrated(big_url))
                asyncio.run(_migrated(small_url))
                ours = asyncio.run(_timed_sweeps(big_url, big, now))
                theirs = asyncio.run(_timed_sweeps(small_url, SMALL, now))
        return Round(
            subject=statistics.median(ours) * 1000,
            reference=statistics.median(theirs) * 1000,
            extras={"watched_jobs": float(big + DUE)},
        )

    return run


# --- heartbeats ------------------------------------------------------------------------------


async def _running_job(url: str) -> tuple[str, str]:
    store = make_store(url)
    await store.open()
    try:
        issued = await issue_key(store, "bench")
        job_id = "running-job"
        await store.create_job(job_id, Created(owner=issued.record.key_id, total=60))
        await store.append(job_id, [NewEvent(new_event_id(), Started())])
        return issued.secret, job_id
    finally:
        await store.close()


def heartbeat_vs_get(config: BenchConfig) -> Round:
    """Heartbeats and GETs of one running job through one server, legs in turns."""
    seconds = 1 if config.quick else 5
    pairs = 1 if config.quick else 4
    with tempfile.TemporaryDirectory(prefix="beat-", dir=config.workdir) as tmp:
        workdir = Path(tmp)
        with sqlite_store(workdir) as url:
            key, job_id = asyncio.run(_running_job(url))
            with jobtracker_server(url, workdir) as base:
                headers = {"X-API-Key": key}
                job_url = f"{base}/api/v1/jobs/{job_id}"
                if fetch(job_url, headers)[0] != 200:
                    raise RuntimeError("the running job does not answer 200")
                get = Load(1, 32, seconds)
                beat = Load(1, 32, seconds, method="POST")
                legs: dict[str, list[LoadResult]] = {"beat": [], "get": []}
                run_load(job_url + "/heartbeat", headers, Load(1, 32, 1, method="POST"))
                run_load(job_url, headers, Load(1, 32, 1))
                for pair in range(pairs):
                    order = ("beat", "get") if pair % 2 == 0 else ("get", "beat")
                    for side in order:
                        if side == "beat":
                            legs[side].append(run_load(job_url + "/heartbeat", headers, beat))
                        else:
                            legs[side].append(run_load(job_url, headers, get))
    return Round(
        subject=statistics.median(r.requests_per_s for r in legs["beat"]),
        reference=statistics.median(r.requests_per_s for r in legs["get"]),
        extras={"p99_ms": statistics.median(r.p99_ms for r in legs["beat"])},
        notes=() if have_wrk() else (WRK_MISSING,),
    )


_SWEEP = (f"Reaper.sweep ending {DUE} timed-out jobs among 1,000,000 other running jobs "
          f"(median of {SWEEPS} sweeps)")
_SMALL = f"the same sweep among {SMALL:,} other running jobs"
BENCHMARKS = [
    Benchmark(
        name="sweep-sqlite",
        subject=f"{_SWEEP}, SQLite",
        reference=_SMALL,
        unit="ms",
        target="<= 1.5x the reference",
        run=sweep_round(sqlite_store),
        meets=lambda ratio, extras: ratio <= 1.5,
        higher_is_better=False,
    ),
    Benchmark(
        name="sweep-postgresql",
        subject=f"{_SWEEP}, PostgreSQL",
        reference=_SMALL,
        unit="ms",
        target="<= 1.5x the reference",
        run=sweep_round(postgres_store),
        meets=lambda ratio, extras: ratio <= 1.5,
        higher_is_better=False,
        unavailable=postgres_unavailable,
    ),
    Benchmark(
        name="heartbeat-sqlite",
        subject="POST /api/v1/jobs/{id}/heartbeat, running job, SQLite, serve "
                "(wrk -t1 -c32, 5 s legs in turns, median leg)",
        reference="GET /api/v1/jobs/{id} of the same running job, same server, same load",
        unit="req/s",
        target=">= 0.8x the reference",
        run=heartbeat_vs_get,
        meets=lambda ratio, extras: ratio >= 0.8,
    ),
]
