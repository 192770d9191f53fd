"""How long the lean log's migration takes on a store of the previous release.

    python scripts/migration_time.py 1000000          # build a 1M-event file, migrate it, time it
    python scripts/migration_time.py 10000000 --keep  # keep the files (in --workdir)
    python scripts/migration_time.py 1000000 --postgres  # the same on PostgreSQL (0010)

The file is built at migration 0006 (a PostgreSQL database, in a database of its own on
$JOBTRACKER_BENCH_PG_URL's server, at 0009) with the replay benchmark's jobs (half the events in
one big job, the rest in jobs of 100, 50 at a time per job), each event as that release stored it;
building is not timed. Then the store's own migration runs, batch by batch, as `jobtracker serve`
would run it on open.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import itertools
import logging
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobtracker.store.migrate import migrations  # noqa: E402
from jobtracker.store.sqlite import lean  # noqa: E402
from jobtracker.store.sqlite.log import connect  # noqa: E402
from scripts.benchmarks.replay import interleave, job_events, replay_log_jobs  # noqa: E402

_PG_COLUMNS = ("job_id", "version", "event_id", "type", "schema_version", "data", "recorded_at")

_INSERT = (
    "INSERT INTO events (job_id, version, event_id, type, schema_version, data, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def old_file(path: Path, events: int) -> None:
    """A file at migration 0006 holding `events` events in the old layout."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    for migration in migrations("sqlite"):
        if migration.name < lean.LEAN_LOG:
            conn.executescript(f"BEGIN; INSERT INTO schema_migrations VALUES ('{migration.name}', "
                               f"''); {migration.sql}\n;COMMIT;")
    streams = [job_events(job_id, "key_bench", count) for job_id, count in replay_log_jobs(events)]
    rows = interleave(streams, block=50)
    while chunk := [row for _, row in zip(range(50_000), rows, strict=False)]:
        conn.execute("BEGIN")
        conn.executemany(_INSERT, chunk)
        conn.execute("COMMIT")
    conn.close()


async def postgres(events: int) -> None:
    """Build a database at migration 0009, migrate it as the store does on open, print the time."""
    import asyncpg

    from jobtracker.store.postgres.driver import migrate_postgres
    from scripts.benchmarks.postgres import at_old_layout, scratch_database

    async with scratch_database() as url:
        conn = await asyncpg.connect(url)
        try:
            began = time.perf_counter()
            await at_old_layout(conn)
            streams = [job_events(job_id, "key_bench", count)
                       for job_id, count in replay_log_jobs(events)]
            rows = interleave(streams, block=50)
            moment = functools.cache(dt.datetime.fromisoformat)  # the log's text, as timestamptz
            while chunk := [(*row[:6], moment(row[6])) for row in itertools.islice(rows, 50_000)]:
                await conn.copy_records_to_table("events", records=chunk, columns=_PG_COLUMNS)
            await conn.execute("VACUUM ANALYZE events")
            built = time.perf_counter() - began
            size = await conn.fetchval("SELECT pg_total_relation_size('events')")
            began = time.perf_counter()
            applied = await migrate_postgres(conn)
            seconds = time.perf_counter() - began
            after = await conn.fetchval(
                "SELECT sum(pg_total_relation_size(t)) FROM "
                "unnest(ARRAY['log', 'log_ids', 'log_text_ids', 'log_jobs']) AS t")
        finally:
            await conn.close()
    print(f"{events:,} events: built in {built:.1f} s ({size / events:.0f} B/event); "
          f"{', '.join(applied)} in {seconds:.1f} s ({events / seconds:,.0f} events/s); "
          f"log after {int(after) / events:.0f} B/event")


def main() -> None:
    """Build, migrate, print the time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", type=int)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.postgres:
        asyncio.run(postgres(args.events))
        return
    folder = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        path = folder / "old.db"
        began = time.perf_counter()
        old_file(path, args.events)
        built = time.perf_counter() - began
        size = path.stat().st_size
        conn = connect(str(path))  # as the store opens it: WAL, synchronous = FULL
        began = time.perf_counter()
        applied = lean.migrate(conn)
        seconds = time.perf_counter() - began
        conn.execute("VACUUM")
        conn.close()
        print(f"{args.events:,} events: built in {built:.1f} s ({size / args.events:.0f} B/event); "
              f"{', '.join(applied)} in {seconds:.1f} s ({args.events / seconds:,.0f} events/s); "
              f"after VACUUM {path.stat().st_size / args.events:.0f} B/event")
    finally:
        if not args.keep:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
