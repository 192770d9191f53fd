"""Replay and GET on large logs: is replay fast and small, and does GET ignore history length?

The logs are written straight into the schema with `executemany` (the API would take minutes for
a million events); their projection is then made by one replay, which is what a real user would
do after an import. Full sizes: a 1,000,000-event log over 5,001 interleaved jobs for replay; a
job with 1,000,000 events beside one with 50 for GET. `quick` uses 20,000 events.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from scripts.benchmarks.base import BenchConfig, Benchmark, Round
from scripts.benchmarks.lean_rows import write_rows

ROOT = Path(__file__).resolve().parents[2]
RECORDED_AT = "2026-01-01T00:00:00.000000Z"


def job_events(
    job_id: str, owner: str, count: int, *, finished: bool = True
) -> Iterator[tuple[Any, ...]]:
    """`count` stored events of one job as the old layout held them (keyed JSON, text ids and
    times): rows (1 in 10 failed), an e-mail per row, and at the end `succeeded`, or a last
    progress report for a job still running."""
    rows = (count - 3) // 2
    extra = (count - 3) % 2  # an odd remainder becomes one progress report
    fields: list[tuple[str, int, dict[str, Any]]] = [
        ("created", 1, {"owner": owner, "total": rows, "label": None}),
        ("started", 1, {}),
    ]
    if extra:
        fields.append(("progress", 1, {"current": 0, "total": rows, "status": None}))
    for version, (kind, schema, data) in enumerate(fields, start=1):
        yield (job_id, version, f"{job_id}:{version}", kind, schema, orjson.dumps(data).decode(),
               RECORDED_AT)
    version = len(fields)
    for row in range(rows):
        email = f"r{row}@uni.edu"
        if row in (3, 13):  # two row errors in every job: GET bodies of the same size
            outcome = ("row_failed", 2, {"row": row, "email": email, "error": "Invalid email"})
        else:
            outcome = ("row_succeeded", 1, {"row": row, "email": email, "internal": row % 3 == 0})
        for kind, schema, data in (outcome, ("email_sent", 1, {"row": row, "email": email})):
            version += 1
            yield (job_id, version, f"{job_id}:{version}", kind, schema,
                   orjson.dumps(data).decode(), RECORDED_AT)
    version += 1
    if finished:
        yield (job_id, version, f"{job_id}:{version}", "succeeded", 1, "{}", RECORDED_AT)
    else:
        report = {"current": rows, "total": rows, "status": None}
        yield (job_id, version, f"{job_id}:{version}", "progress", 1,
               orjson.dumps(report).decode(), RECORDED_AT)


def interleave(streams: list[Iterator[tuple[Any, ...]]], block: int) -> Iterator[tuple[Any, ...]]:
    """Round-robin `block` events at a time from each stream: how concurrent workers write."""
    live = list(streams)
    while live:
        for stream in list(live):
            taken = list(itertools.islice(stream, block))
            yield from taken
            if len(taken) < block:
                live.remove(stream)


def build_log(
    path: Path, jobs: list[tuple[str, int]], owner: str = "key_bench", *, finished: bool = True
) -> int:
    """A migrated SQLite file holding the given jobs' events (all finished, or all still
    running), in the log's stored form; the projection is left empty."""
    from jobtracker.store.sqlite.log import SqliteLog

    log = SqliteLog(str(path))
    log.migrate()
    log.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    streams = [job_events(job_id, owner, count, finished=finished) for job_id, count in jobs]
    rows = interleave(streams, block=50)
    total = 0
    while chunk := [row for _, row in zip(range(50_000), rows, strict=False)]:
        total += write_rows(conn, chunk)
    conn.execute("COMMIT")
    conn.close()
    return total


def replay_log_jobs(events: int) -> list[tuple[str, int]]:
    """Half the events in one big job, the rest in jobs of 100: 1,000,000 -> 1 + 5,000 jobs."""
    small = max(1, events // 2 // 100)
    return [("big", events - small * 100), *((f"job-{n}", 100) for n in range(small))]


# Each measurement runs in a child process that reports its own peak RSS on its last line, so the
# figure is the replay's alone, not the benchmark runner's (Linux: read from /proc).
_CHILD = """
import re, time
{setup}
began = time.perf_counter()
{body}
elapsed = time.perf_counter() - began
# VmHWM, not getrusage: ru_maxrss carries over the parent's high-water mark across fork and exec.
with open("/proc/self/status") as status:
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1))
print(count, elapsed, peak_kb / 1024)
"""
#: Runs `jobtracker replay` on the store URL given as `path` (the PostgreSQL variant uses it too).
REPLAY_SETUP = "import io, contextlib, re; from jobtracker.cli.main import main"
REPLAY_BODY = """
out = io.StringIO()
with contextlib.redirect_stdout(out):
    assert main(["replay", "--store", "{path}"]) == 0
count = int(re.search(r"replayed ([0-9,]+) events", out.getvalue()).group(1).replace(",", ""))
"""
_PLAIN_FOLD = """
import orjson

def fold_plain(jobs, rows):
    loads = orjson.loads
    for job_id, version, position, kind, {schema}data in rows:
        fields = loads(data)
        job = jobs.get(job_id)
        if job is None:
            jobs[job_id] = job = {{"status": "PENDING", "version": 0, "successful": 0,
                                  "failed": 0, "internal": 0, "emails_sent": 0, "errors": []}}
        job["version"] = version
        if kind == {row_succeeded}:
            job["successful"] += 1
            job["internal"] += fields[{internal}]
            job["status"] = "PROGRESS"
        elif kind == {email_sent}:
            job["emails_sent"] += 1
        elif kind == {row_failed}:
            job["failed"] += 1
            job["errors"].append((fields[{row}], fields[{email}], fields[{error}]))
        elif kind == {succeeded}:
            job["status"] = "SUCCESS"
"""
#: The reference's fold: each stored row's JSON decoded with orjson and counted into a plain dict
#: per job (status, version, row and e-mail counters, row errors), with none of the projection's
#: checks, no event objects and no writes. Shared with the PostgreSQL variant (keyed fields).
PLAIN_FOLD = _PLAIN_FOLD.format(schema="schema, ", **{name: repr(name) for name in (
    "row_succeeded", "email_sent", "row_failed", "succeeded", "internal", "row", "email", "error")})
#: The same over SQLite's lean log: `type` values (code and schema version) and positional fields
#: (`domain/stored.py`).
PLAIN_FOLD_LEAN = _PLAIN_FOLD.format(schema="", row_succeeded=4, email_sent=6, row_failed=21,
                                     succeeded=8, internal=2, row=0, email=1, error=2)
_SCAN_SETUP = "import sqlite3"
_SELECT_LOG = (
    "SELECT k.job_id, l.version, l.position, l.type, l.data "
    "FROM log l JOIN log_jobs k ON k.job_key = l.job_key ORDER BY l.position"
)
_SCAN = """
conn = sqlite3.connect("{path}")
rows = conn.execute("SELECT_LOG")
count = 0
while chunk := rows.fetchmany(20000):
    count += len(chunk)
""".replace("SELECT_LOG", _SELECT_LOG)
_FOLD_SETUP = "import sqlite3" + PLAIN_FOLD_LEAN
_FOLD = """
conn = sqlite3.connect("{path}")
rows = conn.execute("SELECT_LOG")
count, jobs = 0, {{}}
while chunk := rows.fetchmany(20000):
    count += len(chunk)
    fold_plain(jobs, chunk)
""".replace("SELECT_LOG", _SELECT_LOG)


def measure(setup: str, body: str, path: Path | str) -> tuple[int, float, float]:
    """(events, seconds, peak RSS in MB) of `body` run in a fresh Python process after `setup`."""
    code = _CHILD.format(setup=setup, body=body.format(path=path))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {done.stderr[-2000:]}")
    count, seconds, rss = done.stdout.split()[-3:]
    return int(count), float(seconds), float(rss)


_BUILT: dict[str, Path] = {}


def replay_log(config: BenchConfig) -> Path:
    """The replay benchmark's log, built once per run (and kept in the workdir across runs)."""
    events = 20_000 if config.quick else 1_000_000
    path = Path(config.workdir) / f"bench-replay-lean-{events}.db"
    if str(path) not in _BUILT:
        if not path.exists():
            build_log(path, replay_log_jobs(events))
        _BUILT[str(path)] = path
    return path


def replay_round(config: BenchConfig) -> Round:
    """Replay the whole log in a child process beside a plain fold of the same rows; a bare scan
    of them is reported too (`raw_scan_events_per_s`), the floor under both."""
    path = replay_log(config)
    events, seconds, rss = measure(REPLAY_SETUP, REPLAY_BODY, f"sqlite:///{path}")
    folded, fold_seconds, fold_rss = measure(_FOLD_SETUP, _FOLD, path)
    scanned, scan_seconds, _ = measure(_SCAN_SETUP, _SCAN, path)
    rate, fold_rate = events / seconds, folded / fold_seconds
    return Round(rate, fold_rate, {"events_per_s": rate, "peak_rss_mb": rss,
                                   "reference_rss_mb": fold_rss,
                                   "raw_scan_events_per_s": scanned / scan_seconds,
                                   "events": events})


REPLAY = Benchmark(
    name="replay",
    subject="jobtracker replay of a whole SQLite log (1,000,000 events, 5,001 jobs), child process",
    reference="the same rows read in position order (sqlite3, fetchmany), decoded with orjson and "
    "folded into a plain dict per job (counters, status, row errors; no checks, no writes), "
    "child process",
    unit="events/s",
    target=">= 0.4x the reference and peak RSS < 200 MB",
    run=replay_round,
    meets=lambda ratio, extras: ratio >= 0.4 and extras["peak_rss_mb"] < 200,
)

def get_log(config: BenchConfig) -> tuple[Path, str]:
    """A file with a running job of 1,000,000 events (20,000 quick) and one of 50, projected; a
    key. Running, because a finished job's body comes from memory (`server/bodycache.py`)
    whatever its history: only a job still running is read from the store on every GET."""
    events = 20_000 if config.quick else 1_000_000
    path = Path(config.workdir) / f"bench-get-running-lean-{events}.db"
    secret_file = path.with_suffix(".key")
    if not secret_file.exists():
        path.unlink(missing_ok=True)
        secret_file.write_text(asyncio.run(_prepare_get_log(path, events)))
    return path, secret_file.read_text()


async def _prepare_get_log(path: Path, events: int) -> str:
    from jobtracker.store import SqliteStore, replay
    from jobtracker.store.keys import issue_key

    store = SqliteStore(str(path))
    await store.open()
    try:
        key = await issue_key(store, "bench")
        build_log(path, [("huge", events), ("small", 50)], owner=key.record.key_id,
                  finished=False)
        await replay.rebuild(store)
    finally:
        await store.close()
    return key.secret


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _latencies(port: int, secret: str, requests: int) -> dict[str, list[float]]:
    """Alternate GETs of the two jobs on one keep-alive connection; seconds per request."""
    import aiohttp

    times: dict[str, list[float]] = {"huge": [], "small": []}
    async with aiohttp.ClientSession(headers={"X-API-Key": secret}) as session:
        for _ in range(40):  # wait for the server to listen
            try:
                async with session.get(f"http://127.0.0.1:{port}/api/v1/jobs/small") as response:
                    await response.read()
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.25)
        for n in range(2 * requests):
            job = "huge" if n % 2 else "small"
            began = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}/api/v1/jobs/{job}") as response:
                assert response.status == 200, await response.text()
                await response.read()
            times[job].append(time.perf_counter() - began)
    return times


def get_round(config: BenchConfig) -> Round:
    """p50 latency of GET on the huge job beside the 50-event job, same server, interleaved."""
    path, secret = get_log(config)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jobtracker", "serve", "--store", f"sqlite:///{path}",
         "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        times = asyncio.run(_latencies(port, secret, 200 if config.quick else 2000))
    finally:
        server.terminate()
        server.wait(timeout=10)
    huge, small = (statistics.median(times[j]) * 1000 for j in ("huge", "small"))
    p90 = {f"p90_{j}_ms": statistics.quantiles(times[j], n=10)[-1] * 1000 for j in times}
    return Round(huge, small, {"p50_huge_ms": huge, "p50_small_ms": small, **p90})


GET_LARGE = Benchmark(
    name="get_large_job",
    subject="GET /api/v1/jobs/huge (1,000,000 events, still running: read from the store on "
    "every GET), jobtracker serve on SQLite, sequential keep-alive requests, p50",
    reference="GET /api/v1/jobs/small (50 events, still running) on the same server, "
    "interleaved with the subject",
    unit="ms",
    target="<= 1.10x the reference",
    run=get_round,
    meets=lambda ratio, extras: ratio <= 1.10,
    higher_is_better=False,
)

BENCHMARKS = [REPLAY, GET_LARGE]
