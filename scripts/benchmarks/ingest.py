"""Ingest benchmarks: group commit over HTTP, and the SDK straight into SQLite.

- `http_group_commit`: 64 concurrent HTTP clients, each posting 1-event batches to a live
  `jobtracker serve`; the same server with `--no-group-commit` (one commit per request) is the
  reference. Both on fresh SQLite files with the store's durable settings (WAL, synchronous FULL).
- `sdk_sqlite_batch1000`: the worker SDK writing straight into SQLite in batches of 1000 (fold,
  projection, row marks and all), against a hand-written `sqlite3.executemany` of the same rows
  (event id, JSON fields) into the same `events` schema, 1000 rows per transaction.
"""

from __future__ import annotations

import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from jobtracker.cli.demo import _free_port, _wait_until_serving
from jobtracker.domain.events import Created, new_event_ids
from jobtracker.domain.stored import TYPE_CODES, pack_event_id, pack_time
from jobtracker.sdk.worker import connect as sdk_connect
from jobtracker.store import SqliteStore
from jobtracker.store.base import utc_now
from jobtracker.store.keys import issue_key
from jobtracker.store.sqlite import lean
from jobtracker.store.sqlite.log import SqliteLog, connect
from scripts.benchmarks.base import BenchConfig, Benchmark, Round

CLIENTS = 64

# -- 64 clients, 1-event batches, with and without group commit ------------------------------------


async def _owner_key(db_path: str) -> str:
    store = SqliteStore(db_path)
    await store.open()
    try:
        return (await issue_key(store, "bench")).secret
    finally:
        await store.close()


class _Connection:
    """A bare HTTP/1.1 keep-alive client: the load generator must cost far less than the server
    it measures, and on a two-core machine aiohttp's client does not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, host: str, path: str, key: str, body: bytes) -> tuple[int, bytes]:
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        self.writer.write(head.encode() + body)
        status_line, _, headers = (await self.reader.readuntil(b"\r\n\r\n")).partition(b"\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return int(status_line.split()[1]), await self.reader.readexactly(length)


async def _one_client(
    host: str, port: int, key: str, job: int, posts: int, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    connection = _Connection(reader, writer)
    status, body = await connection.post(
        host, "/api/v1/jobs", key, orjson.dumps({"job_id": f"job-{job}"}))
    assert status == 201, body
    for row in range(posts):
        event = [{"type": "row_succeeded", "row": row, "email": f"p{row}@uni.edu",
                  "internal": True}]
        started = time.perf_counter()
        status, body = await connection.post(
            host, f"/api/v1/jobs/job-{job}/events", key, orjson.dumps(event))
        assert status == 200, body
        latencies.append(time.perf_counter() - started)
    writer.close()
    await writer.wait_closed()


async def _hammer(port: int, key: str, posts: int) -> tuple[float, list[float]]:
    """All clients at once; returns appends per second and every append's latency."""
    latencies: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_one_client("127.0.0.1", port, key, job, posts, latencies) for job in range(CLIENTS))
    )
    elapsed = time.perf_counter() - started
    return CLIENTS * posts / elapsed, latencies


GROUPS_LOGGED = re.compile(r"group commit: (\d+) appends in (\d+) commits")


def _serve_and_hammer(
    workdir: str, group_commit: bool, posts: int
) -> tuple[float, list[float], float]:
    """Appends/s, latencies, and appends per commit (read from the server's log on exit)."""
    name = f"http-{group_commit}-{uuid.uuid4().hex[:8]}"
    db_path = str(Path(workdir) / f"{name}.db")
    key = asyncio.run(_owner_key(db_path))
    port = _free_port()
    command = [sys.executable, "-m", "jobtracker", "serve", "--store", f"sqlite:///{db_path}",
               "--port", str(port)]
    if not group_commit:
        command.append("--no-group-commit")
    server_log = Path(workdir) / f"{name}.log"
    with open(server_log, "wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        try:
            _wait_until_serving(server, port)
            rate, latencies = asyncio.run(_hammer(port, key, posts))
        finally:
            server.terminate()
            server.wait(timeout=30)
    found = GROUPS_LOGGED.search(server_log.read_text(errors="replace"))
    per_commit = int(found[1]) / int(found[2]) if found else 1.0
    return rate, latencies, per_commit


def _fsync_ms(workdir: str, times: int = 200) -> float:
    """What one durable write costs on this disk: the most group commit can save per request."""
    path = Path(workdir) / f"fsync-{uuid.uuid4().hex[:8]}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        started = time.perf_counter()
        for _ in range(times):
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
        return 1000 * (time.perf_counter() - started) / times
    finally:
        os.close(fd)
        path.unlink()


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_http_group_commit(config: BenchConfig) -> Round:
    """One round: grouped and one-commit-per-request servers in turns (G A A G), each stint on a
    fresh file, so the disk's and the machine's drift hits both alike; rates are over all stints."""
    posts = 20 if config.quick else 60
    order = (True, False) if config.quick else (True, False, False, True)
    seconds = {True: 0.0, False: 0.0}
    latencies: dict[bool, list[float]] = {True: [], False: []}
    per_commit: list[float] = []
    for grouped in order:
        rate, stint_latencies, appends_per_commit = _serve_and_hammer(
            config.workdir, grouped, posts
        )
        seconds[grouped] += CLIENTS * posts / rate
        latencies[grouped].extend(stint_latencies)
        if grouped:
            per_commit.append(appends_per_commit)
    appends = CLIENTS * posts * order.count(True)
    return Round(appends / seconds[True], appends / seconds[False], {
        "appends_per_commit": statistics.mean(per_commit),
        "fsync_ms": _fsync_ms(config.workdir),
        "grouped_p50_ms": 1000 * statistics.median(latencies[True]),
        "grouped_p99_ms": 1000 * _percentile(latencies[True], 0.99),
        "alone_p50_ms": 1000 * statistics.median(latencies[False]),
        "alone_p99_ms": 1000 * _percentile(latencies[False], 0.99),
    })


# -- the SDK straight into SQLite vs executemany -------------------------------------------------


def _fresh_path(workdir: str, name: str) -> str:
    return str(Path(workdir) / f"{name}-{uuid.uuid4().hex[:8]}.db")


def _sdk_into_sqlite(path: str, rows: int) -> float:
    """Seconds for the SDK to report `rows` rows, batch 1000, straight into SQLite."""
    log = SqliteLog(path)
    log.migrate()
    log.create_job("job", Created(owner="bench"))
    log.close()
    with sdk_connect(f"sqlite:///{path}", batch_size=1000, max_delay=3600) as tracker:
        started = time.perf_counter()
        with tracker.job("job") as job:
            for row in range(rows):
                job.row_succeeded(row, f"persona{row}@uni.edu", internal=row % 3 != 0)
        return time.perf_counter() - started


def _executemany_into_sqlite(path: str, rows: int) -> float:
    """Seconds to write the same rows by hand, in the log's stored form: the id's 16 bytes (as a
    `bytearray`, which the sqlite3 module binds without looking for an adapter), the positional
    JSON fields, executemany per 1000."""
    conn = connect(path)
    lean.migrate(conn)
    (job_key,) = conn.execute(
        "INSERT INTO log_jobs (job_id) VALUES ('job') RETURNING job_key").fetchone()
    insert = ("INSERT INTO log (job_key, version, event_id, type, data, at) "
              "VALUES (?, ?, ?, ?, ?, ?)")
    started = time.perf_counter()
    for first in range(0, rows, 1000):
        now = pack_time(utc_now())
        # The SDK's own ids (time-ordered UUIDs): the same rows, so the same index work.
        ids = new_event_ids(min(1000, rows - first))
        batch = [
            (job_key, row + 2, pack_event_id(ids[row - first], bytearray),
             TYPE_CODES["row_succeeded"],
             orjson.dumps([row, f"persona{row}@uni.edu", row % 3 != 0]).decode(), now)
            for row in range(first, min(first + 1000, rows))
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def run_sdk_sqlite(config: BenchConfig) -> Round:
    """One round: reference, SDK, SDK, reference (drift on a shared machine cancels out), same
    row count, a fresh file each time."""
    rows = 10_000 if config.quick else 50_000
    # Warm-up, not timed: the first writes of a process pay for caches both sides share.
    _executemany_into_sqlite(_fresh_path(config.workdir, "warm-raw"), 2000)
    _sdk_into_sqlite(_fresh_path(config.workdir, "warm-sdk"), 2000)
    seconds = {"raw": 0.0, "sdk": 0.0}
    for name in ("raw", "sdk", "sdk", "raw"):
        write = _executemany_into_sqlite if name == "raw" else _sdk_into_sqlite
        seconds[name] += write(_fresh_path(config.workdir, name), rows)
    return Round(2 * rows / seconds["sdk"], 2 * rows / seconds["raw"])


BENCHMARKS: list[Benchmark] = [
    Benchmark(
        name="http_group_commit",
        subject=f"{CLIENTS} keep-alive clients posting 1-event batches to `jobtracker serve` "
        "(2 stints a side, in turns G A A G)",
        reference="the same server with --no-group-commit: one durable commit per request",
        unit="appends/s",
        target=">= 5x the reference",
        run=run_http_group_commit,
        meets=lambda ratio, extras: ratio >= 5.0,
    ),
    Benchmark(
        name="sdk_sqlite_batch1000",
        subject="jobtracker.connect('sqlite:///…'), batch 1000: fold, projection, row marks",
        reference="sqlite3 executemany of the same rows (SDK-style id, JSON fields) into `events`",
        unit="events/s",
        target=">= 0.7x the reference",
        run=run_sdk_sqlite,
        meets=lambda ratio, extras: ratio >= 0.7,
    ),
]


def _main() -> None:
    """Throwaway driver until `scripts/bench.py` exists: `python -m scripts.benchmarks.ingest`."""
    quick = "--quick" in sys.argv
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as workdir:
        config = BenchConfig(quick=quick, rounds=1 if quick else 3, workdir=workdir)
        only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
        for bench in BENCHMARKS:
            if only and bench.name != only:
                continue
            rounds = [bench.run(config) for _ in range(config.rounds)]
            ratios = [r.subject / r.reference for r in rounds]
            print(f"{bench.name}: ratios {[round(x, 2) for x in ratios]} "
                  f"median {statistics.median(ratios):.2f} ({bench.target}); "
                  f"subject {[round(r.subject) for r in rounds]} {bench.unit}, "
                  f"reference {[round(r.reference) for r in rounds]}; "
                  f"extras {[{k: round(v, 1) for k, v in r.extras.items()} for r in rounds]}",
                  flush=True)


if __name__ == "__main__":
    _main()
