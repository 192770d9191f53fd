"""How long migration 0007 (the lean log) takes on a file of the previous release.

    python scripts/migration_time.py 1000000          # build a 1M-event file, migrate it, time it
    python scripts/migration_time.py 10000000 --keep  # keep the files (in --workdir)

The file is built at migration 0006 with the replay benchmark's jobs (half the events in one big
job, the rest in jobs of 100), each event as that release stored it; building is not timed.
Then the store's own migration runs, batch by batch, as `jobtracker serve` would run it on open.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    """Build, migrate, print the time."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", type=int)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
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
