"""Replay on PostgreSQL: `jobtracker replay --store postgresql://…` beside a plain fold of its log.

The same log as the SQLite replay benchmark (half the events in one big job, the rest in jobs of
100, written 50 at a time per job), COPYed into a database of the round's own with an empty
projection, as after an import. The subject is the replay that builds the projection; a second
replay, which finds it sound and writes nothing, is reported beside it (`again_events_per_s`).
Full size: 1,000,000 events; `quick`: 20,000. The reference reads the same rows and folds them
into plain dicts, as the SQLite benchmark's does.
"""

from __future__ import annotations

import asyncio
import itertools

import asyncpg

from scripts.benchmarks.base import BenchConfig, Benchmark, Round
from scripts.benchmarks.postgres import scratch_database
from scripts.benchmarks.replay import (
    PLAIN_FOLD,
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
_FOLD_SETUP = "import asyncio, asyncpg" + PLAIN_FOLD
_FOLD = """
async def scan():
    conn = await asyncpg.connect("{path}")
    count = position = 0
    jobs = {{}}
    while rows := await conn.fetch(
        "SELECT job_id, version, position, type, schema_version, data FROM events "
        "WHERE position > $1 ORDER BY position LIMIT 50000", position
    ):
        count += len(rows)
        position = rows[-1][2]
        fold_plain(jobs, rows)
    await conn.close()
    return count
count = asyncio.run(scan())
"""


async def build_log(url: str, events: int) -> int:
    """Migrate the database and COPY the log into it; the projection is left empty."""
    from jobtracker.store.postgres import PostgresStore

    store = PostgresStore(url, pool_size=1)
    await store.open()
    await store.close()
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
    return total


async def _round(config: BenchConfig) -> Round:
    async with scratch_database() as url:
        await build_log(url, 20_000 if config.quick else 1_000_000)
        events, seconds, rss = await asyncio.to_thread(measure, REPLAY_SETUP, REPLAY_BODY, url)
        _, again_seconds, _ = await asyncio.to_thread(measure, REPLAY_SETUP, REPLAY_BODY, url)
        folded, fold_seconds, fold_rss = await asyncio.to_thread(measure, _FOLD_SETUP, _FOLD, url)
    rate, fold_rate = events / seconds, folded / fold_seconds
    extras = {"events_per_s": rate, "again_events_per_s": events / again_seconds,
              "peak_rss_mb": rss, "reference_rss_mb": fold_rss, "events": events}
    return Round(rate, fold_rate, extras)


def replay_round(config: BenchConfig) -> Round:
    """Build a log in a fresh database, replay it in a child process, scan it in another."""
    return asyncio.run(_round(config))


REPLAY_POSTGRES = Benchmark(
    name="replay_postgres",
    subject="jobtracker replay of a whole PostgreSQL log (1,000,000 events, 5,001 jobs) into an "
    "empty projection, child process",
    reference="the same rows read in position order (asyncpg, keyset chunks of 50,000), decoded "
    "with orjson and folded into a plain dict per job (counters, status, row errors; no checks, "
    "no writes), child process",
    unit="events/s",
    target=">= 0.4x the reference and peak RSS < 200 MB",
    run=replay_round,
    meets=lambda ratio, extras: ratio >= 0.4 and extras["peak_rss_mb"] < 200,
)

BENCHMARKS = [REPLAY_POSTGRES]
