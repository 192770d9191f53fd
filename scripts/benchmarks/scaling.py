"""Past one process: 1, 2 and 4 `serve` processes on one PostgreSQL database, and GETs from a
streaming replica with the `min_version` guard.

- `scaling`: `serve --workers N` (N = 1, 2, 4; 1 and 2 in quick mode) on one fresh database of
  the shared server, one N after the other in a round. For each: GETs/s of a running job (60 rows,
  PROGRESS) and of the seed's finished job under wrk, and appends/s from 64 keep-alive clients,
  one event per POST (`ingest`'s lean client: the asyncio SDK's httpx costs about 3 ms of CPU per
  append here, so SDK writers measured the load generator, not the servers). Every figure is also
  given as a ratio to the 1-process figure of the same round; the subject is 4 processes' GETs of
  the running job, the reference 1 process's.
- `replica-get`: two clusters of our own (`scripts/pg_replica.py`: a primary, and a standby made
  by `pg_basebackup -R`). `serve --read-url STANDBY` against `serve` alone, both on the primary,
  GET of the running job in turns (the replica's rate is the subject, the primary's the
  reference); the same GET with `?min_version` (met) for the guard's cost; then appends each
  followed at once by a GET with the append's version (must never be older: read-your-writes),
  and by one without it (may be older: what a replica is); and the replication lag, from an
  append's acknowledgement until the standby shows it.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import orjson

import jobtracker
from scripts.benchmarks.ingest import _Connection
from scripts.pg_replica import ReplicaPair, missing_binaries

from .base import BenchConfig, Benchmark, Round
from .get import JOB_ID, postgres_store, postgres_unavailable, seed_store
from .httpload import WRK_MISSING, Load, LoadResult, free_port, have_wrk, python, run_load, serving

RUNNING_ID = "running-60-rows"
#: Concurrent appending connections, each on a job of its own (as `http_group_commit`).
CLIENTS = 64
#: Each process's pool, small enough that 4 processes and their lanes stay well inside the
#: shared server's 100 connections (2 cores: more connections than that would only queue).
POOL_SIZE = 5


def _processes(config: BenchConfig) -> tuple[int, ...]:
    return (1, 2) if config.quick else (1, 2, 4)


def _leg_seconds(config: BenchConfig) -> int:
    return 1 if config.quick else 4


# --- seeding ---------------------------------------------------------------------------------


def seed(url: str) -> str:
    """The seed's SUCCESS job and a running one (started, 60 rows of 100); the owner's key."""
    key = seed_store(url)
    with jobtracker.connect(url, api_key=key) as tracker:
        tracker.create_job(job_id=RUNNING_ID, total=100)
        with tracker.job(RUNNING_ID) as job:
            job.started()
            for row in range(60):
                job.row_succeeded(row, f"r{row}@uni.edu", internal=row % 2 == 0)
    return key


@contextlib.contextmanager
def server(store_url: str, workdir: Path, workers: int = 1,
           read_url: str | None = None) -> Iterator[str]:
    """`jobtracker serve` (webhooks off: nothing here subscribes) on a free port; its base URL."""
    port = free_port()
    cmd = [python(), "-m", "jobtracker", "serve", "--store", store_url, "--port", str(port),
           "--workers", str(workers), "--webhooks", "off"]
    if read_url is not None:
        cmd += ["--read-url", read_url]
    with serving(cmd, workdir / f"serve-{port}.log", ready_count=workers):
        yield f"http://127.0.0.1:{port}"


def _job_url(base: str, job_id: str, query: str = "") -> str:
    return f"{base}/api/v1/jobs/{job_id}{query}"


def _load(config: BenchConfig) -> Load:
    return Load(threads=1, connections=32, seconds=_leg_seconds(config))


# --- appends over HTTP ------------------------------------------------------------------------


async def _client(port: int, key: str, job_id: str, deadline: float) -> int:
    """One keep-alive connection creating `job_id`, then appending one event per POST."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection, host = _Connection(reader, writer), f"127.0.0.1:{port}"
    status, body = await connection.post(host, "/api/v1/jobs", key,
                                         orjson.dumps({"job_id": job_id}))
    assert status == 201, body
    count = 0
    while time.monotonic() < deadline:
        event = [{"type": "row_succeeded", "row": count, "email": f"r{count}@uni.edu",
                  "internal": True}]
        status, body = await connection.post(host, f"/api/v1/jobs/{job_id}/events", key,
                                             orjson.dumps(event))
        assert status == 200, body
        count += 1
    writer.close()
    await writer.wait_closed()
    return count


async def _appends(port: int, key: str, prefix: str, seconds: float) -> tuple[float, float]:
    """`CLIENTS` connections appending for `seconds`: appends/s, and this process's CPU share."""
    deadline = time.monotonic() + seconds
    cpu, started = time.process_time(), time.monotonic()
    counts = await asyncio.gather(
        *(_client(port, key, f"{prefix}-{n}", deadline) for n in range(CLIENTS)))
    elapsed = time.monotonic() - started
    return sum(counts) / elapsed, (time.process_time() - cpu) / elapsed


# --- scaling: 1, 2, 4 processes --------------------------------------------------------------


def _one_size(url: str, key: str, workers: int, workdir: Path,
              config: BenchConfig) -> dict[str, float]:
    headers = {"X-API-Key": key}
    with server(url, workdir, workers) as base:
        warm = Load(1, 32, 1)
        for job_id in (RUNNING_ID, JOB_ID):
            run_load(_job_url(base, job_id), headers, warm)
        running = run_load(_job_url(base, RUNNING_ID), headers, _load(config))
        finished = run_load(_job_url(base, JOB_ID), headers, _load(config))
        port = int(base.rsplit(":", 1)[1])
        asyncio.run(_appends(port, key, f"warm{workers}", 0.5))
        appends, client_cpu = asyncio.run(_appends(port, key, f"w{workers}", _leg_seconds(config)))
    return {"get_running": running.requests_per_s, "get_running_p99_ms": running.p99_ms,
            "get_finished": finished.requests_per_s, "get_finished_p99_ms": finished.p99_ms,
            "appends": appends, "appends_client_cpu": client_cpu}


def scaling_round(config: BenchConfig) -> Round:
    """Each process count in turn on one database; rates, and each as a ratio to 1 process."""
    with tempfile.TemporaryDirectory(prefix="scaling-", dir=config.workdir) as tmp:
        workdir = Path(tmp)
        with postgres_store(workdir) as database:
            url = f"{database}?pool_size={POOL_SIZE}"
            key = seed(url)
            sizes = {n: _one_size(url, key, n, workdir, config) for n in _processes(config)}
    extras: dict[str, float] = {}
    one, most = sizes[1], max(sizes)
    for n, figures in sizes.items():
        for name in ("get_running", "get_finished", "appends"):
            extras[f"{name}_{n}p"] = figures[name]
            if n != 1:
                extras[f"{name}_{n}p_x"] = figures[name] / one[name]
        extras[f"get_running_p99_ms_{n}p"] = figures["get_running_p99_ms"]
        extras[f"appends_client_cpu_{n}p"] = figures["appends_client_cpu"]
    return Round(subject=sizes[most]["get_running"], reference=one["get_running"],
                 extras=extras, notes=() if have_wrk() else (WRK_MISSING,))


# --- the replica -----------------------------------------------------------------------------


def _interleaved_rps(urls: list[str], headers: dict[str, str], load: Load,
                     pairs: int) -> list[LoadResult]:
    """Each URL loaded in turns (A B .. B A ..), `pairs` times; each URL's median leg."""
    legs: dict[str, list[LoadResult]] = {url: [] for url in urls}
    for url in urls:
        run_load(url, headers, Load(1, 32, 1))
    for pair in range(pairs):
        for url in urls if pair % 2 == 0 else reversed(urls):
            legs[url].append(run_load(url, headers, load))
    return [sorted(legs[url], key=lambda r: r.requests_per_s)[len(legs[url]) // 2]
            for url in urls]


def _etag_version(answer: aiohttp.ClientResponse) -> int:
    return int(answer.headers["ETag"].strip('"'))


async def _append(session: aiohttp.ClientSession, base: str, job_id: str, row: int) -> int:
    event = [{"type": "row_succeeded", "row": row, "email": f"x{row}@uni.edu", "internal": True}]
    async with session.post(f"{base}/api/v1/jobs/{job_id}/events", json=event) as answer:
        version: int = (await answer.json())["version"]
        return version


async def _after_appends(base: str, key: str, standby_url: str, count: int) -> dict[str, float]:
    """Appends each followed at once by a guarded GET, by an unguarded one, and by a watch on
    the standby itself: stale answers counted, guarded latency and replication lag timed."""
    guarded_ms: list[float] = []
    lag_ms: list[float] = []
    stale_guarded = stale_plain = 0
    standby = await asyncpg.connect(standby_url)
    async with aiohttp.ClientSession(headers={"X-API-Key": key}) as session:
        async with session.post(f"{base}/api/v1/jobs", json={"job_id": "ryw"}) as created:
            assert created.status == 201, await created.text()
        for row in range(count):
            version = await _append(session, base, "ryw", 3 * row)
            started = time.perf_counter()
            async with session.get(_job_url(base, "ryw", f"?min_version={version}")) as answer:
                stale_guarded += _etag_version(answer) < version
            guarded_ms.append((time.perf_counter() - started) * 1000)
            version = await _append(session, base, "ryw", 3 * row + 1)
            async with session.get(_job_url(base, "ryw")) as answer:
                stale_plain += _etag_version(answer) < version
            version = await _append(session, base, "ryw", 3 * row + 2)
            lag_ms.append(await _lag_ms(standby, version))
    await standby.close()
    return {"stale_with_guard": stale_guarded, "stale_without_guard": stale_plain / count,
            "guarded_after_append_p50_ms": statistics.median(guarded_ms),
            "guarded_after_append_p99_ms": _p99(guarded_ms),
            "lag_p50_ms": statistics.median(lag_ms), "lag_p99_ms": _p99(lag_ms)}


async def _lag_ms(standby: asyncpg.Connection, version: int) -> float:
    """Milliseconds until the standby's copy of the job reaches `version`."""
    started = time.perf_counter()
    while True:
        seen = await standby.fetchval("SELECT version FROM jobs WHERE job_id = 'ryw'")
        if seen >= version:
            return (time.perf_counter() - started) * 1000
        await asyncio.sleep(0.0002)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def replica_round(config: BenchConfig) -> Round:
    """GET from the standby (and with the guard) against GET from the primary; read-your-writes
    and replication lag under appends."""
    with tempfile.TemporaryDirectory(prefix="replica-", dir=config.workdir) as tmp, \
            ReplicaPair() as pair:
        workdir = Path(tmp)
        primary, standby = pair.primary_url(), pair.standby_url()
        key = seed(primary)
        pair.wait_for_replay()
        headers = {"X-API-Key": key}
        with server(primary, workdir, read_url=standby) as replica_base, \
                server(primary, workdir) as primary_base:
            version = _etag_version_of(replica_base, key)
            urls = [_job_url(replica_base, RUNNING_ID), _job_url(primary_base, RUNNING_ID),
                    _job_url(replica_base, RUNNING_ID, f"?min_version={version}")]
            from_replica, from_primary, guarded = _interleaved_rps(
                urls, headers, _load(config), 1 if config.quick else 2)
            extras = asyncio.run(_after_appends(replica_base, key, standby,
                                                30 if config.quick else 300))
    extras |= {"guarded_rps": guarded.requests_per_s,
               "guard_x": guarded.requests_per_s / from_replica.requests_per_s,
               "replica_p99_ms": from_replica.p99_ms, "primary_p99_ms": from_primary.p99_ms}
    return Round(subject=from_replica.requests_per_s, reference=from_primary.requests_per_s,
                 extras=extras, notes=() if have_wrk() else (WRK_MISSING,))


def _etag_version_of(base: str, key: str) -> int:
    """The running job's version, from its ETag."""
    request = urllib.request.Request(_job_url(base, RUNNING_ID), headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return int(answer.headers["ETag"].strip('"'))


def _replica_unavailable() -> str | None:
    return missing_binaries()


_WRK = "wrk -t1 -c32 --latency, 4 s legs"
BENCHMARKS = [
    Benchmark(
        name="scaling",
        subject=f"serve --workers 4 on one PostgreSQL database (pool_size={POOL_SIZE}): GET of a "
                f"running job ({_WRK}); extras: 2 and 4 processes, running and finished GETs, "
                f"and appends (1 event per POST) from {CLIENTS} keep-alive clients, each "
                "with its ratio to 1 process (_x)",
        reference="the same with serve --workers 1, same round, same database",
        unit="req/s",
        target="none: measured on 2 shared cores (see SCALING.md)",
        run=scaling_round,
        meets=None,
        unavailable=postgres_unavailable,
    ),
    Benchmark(
        name="replica-get",
        subject=f"GET of a running job from serve --read-url STANDBY (streaming replica on this "
                f"machine; {_WRK}, legs in turns); extras: the same with ?min_version (guard), "
                "read-your-writes and lag after appends",
        reference="the same GET from serve on the primary alone",
        unit="req/s",
        target="no GET with min_version older than its append (stale_with_guard 0)",
        run=replica_round,
        meets=lambda ratio, extras: extras["stale_with_guard"] == 0,
        unavailable=_replica_unavailable,
    ),
]
