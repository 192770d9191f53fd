"""Replay on PostgreSQL: `jobtracker replay --store postgresql://…` beside a plain fold of its log.

The same log as the SQLite replay benchmark (half the events in one big job, the rest in jobs of
100, written 50 at a time per job), COPYed into a database of the round's own at the layout before
the lean log (migration 0009) and migrated by the store as it opens (the lean log then holds a
row per 50 events of a job; `migration_s` is that step), with an empty projection, as after an
import. The subject is the replay that builds the projection; a second replay, which finds it
sound and writes nothing, is reported beside it (`again_events_per_s`). Full size: 1,000,000
events; `quick`: 20,000. The reference reads the same rows and folds them into plain dicts, as the
SQLite benchmark's does.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import asyncpg

from scripts.benchmarks.base import BenchConfig, Benchmark, Round
from scripts.benchmarks.postgres import at_old_layout, scratch_database
from scripts.benchmarks.replay import (
    PLAIN_FOLD_LEAN,
    REPLAY_BODY,
    REPLAY_SETUP,
    interleave,
    job_events,
    measure,
    replay_log_jobs,
)

_COLUMNS = ("job_id", "version", "event_id", "type", "schema_version", "data")
# What replay itself reads, the same way (position order, keyset chunks of 50,000 rows, jsonb as
# asyncpg hands it over: text), each chunk folded as the SQLite reference folds it.
_FOLD_SETUP = "import asyncio, asyncpg" + PLAIN_FOLD_LEAN
_FOLD = """
async def scan():
    conn = await asyncpg.connect("{path}")
    count = position = 0
    jobs = {{}}
    while rows := await conn.fetch(
        "SELECT k.job_id, b.last_version, b.last_position, b.types, b.data FROM log b "
        "JOIN log_jobs k ON k.job_key = b.job_key "
        "WHERE b.last_position > $1 ORDER BY b.last_position LIMIT 1000", position
    ):
        events = []
        for job_id, version, last, types, data in rows:
            n = len(types)
            events += zip([job_id] * n, range(version - n + 1, version + 1),
                          range(last - n + 1, last + 1), types, data.split(chr(10)))
        count += len(events)
        position = rows[-1][2]
        fold_plain(jobs, events)
    await conn.close()
    return count
count = asyncio.run(scan())
"""


async def build_log(url: str, events: int) -> tuple[int, float]:
    """COPY the log into the database at the old layout, then open the store on it (which
    migrates it to the lean log); the projection is left empty. Events, and the migration's
    seconds."""
    from jobtracker.store.postgres import PostgresStore

    conn = await asyncpg.connect(url)
    try:
        await at_old_layout(conn)
    finally:
        await conn.close()
    streams = [job_events(job_id, "key_bench", count) for job_id, count in replay_log_jobs(events)]
    rows = interleave(streams, block=50)
    conn = await asyncpg.connect(url)
    total = 0
    try:
        while chunk := [row[:6] for row in itertools.islice(rows, 50_000)]:
            await conn.copy_records_to_table("events", records=chunk, columns=_COLUMNS)
            total += len(chunk)
    finally:
        await conn.close()
    store = PostgresStore(url, pool_size=1)
    began = time.perf_counter()
    await store.open()  # migration 0010
    migrated = time.perf_counter() - began
    await store.close()
    return total, migrated


async def _round(config: BenchConfig) -> Round:
    async with scratch_database() as url:
        _, migrated = await build_log(url, 20_000 if config.quick else 1_000_000)
        events, seconds, rss = await asyncio.to_thread(measure, REPLAY_SETUP, REPLAY_BODY, url)
        _, again_seconds, _ = await asyncio.to_thread(measure, REPLAY_SETUP, REPLAY_BODY, url)
        folded, fold_seconds, fold_rss = await asyncio.to_thread(measure, _FOLD_SETUP, _FOLD, url)
    rate, fold_rate = events / seconds, folded / fold_seconds
    extras = {"events_per_s": rate, "migration_s": migrated,
              "again_events_per_s": events / again_seconds,
              "peak_rss_mb": rss, "reference_rss_mb": fold_rss, "events": events}
    return Round(rate, fold_rate, extras)


def replay_round(config: BenchConfig) -> Round:
    """Build a log in a fresh database, replay it in a child process, scan it in another."""
    return asyncio.run(_round(config))


REPLAY_POSTGRES = Benchmark(
    name="replay_postgres",
    subject="jobtracker replay of a whole PostgreSQL log (1,000,000 events, 5,001 jobs) into an "
    "empty projection, child process",
    reference="the same log read in position order (asyncpg, keyset chunks of 1,000 rows of the "
    "lean log, split into events), each event decoded with orjson and folded into a plain dict "
    "per job (counters, status, row errors; no checks, no writes), child process",
    unit="events/s",
    target=">= 0.4x the reference and peak RSS < 200 MB",
    run=replay_round,
    meets=lambda ratio, extras: ratio >= 0.4 and extras["peak_rss_mb"] < 200,
)

BENCHMARKS = [REPLAY_POSTGRES]
