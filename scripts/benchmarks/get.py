"""GET /api/v1/jobs/{id} under wrk: `jobtracker serve` against a bare aiohttp handler.

Each round seeds a fresh store with the seed page's SUCCESS job (its exact body), or a job still
running (PROGRESS, 60 rows processed: what a polling client reads most), starts both servers as
processes of their own, checks that they answer the same bytes, warms them up, then loads them in
turns (subject, reference, reference, subject, ...) with the same wrk settings, so a drift in the
machine's load hits both sides alike. One variant keeps 8 SDK processes appending rows to other
jobs of the same SQLite file through both sides' legs. Another compares `--workers 2` with
`--workers 1` the same way. The store is a URL: the PostgreSQL variants run when `make_store`
accepts `postgresql://` (set JOBTRACKER_BENCH_PG_URL to point it at a server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

import jobtracker
from jobtracker.cli.demo_worker import Simulation, demo_recipients, issue_credentials
from jobtracker.domain.errors import ConfigError
from jobtracker.domain.events import Created, NewEvent, RowSucceeded, Started
from jobtracker.store import make_store
from jobtracker.store.keys import issue_key

from .base import BenchConfig, Benchmark, Round
from .httpload import (
    WRK_MISSING,
    Load,
    LoadResult,
    fetch,
    free_port,
    have_wrk,
    python,
    run_load,
    serving,
)

JOB_ID = "abc123-task-id"
#: The seed page's "Completado" example, which the demo worker's recipients reproduce.
SEED_BODY = {
    "job_id": JOB_ID,
    "status": "SUCCESS",
    "result": {
        "total": 50,
        "successful": 48,
        "failed": 2,
        "errors": [
            {"row": 12, "email": "invalido@test", "error": "Invalid email: invalido@test"},
            {"row": 37, "email": "duplicado@test.com", "error": "Calificacion invalida"},
        ],
        "emails_sent": 48,
        "emails_failed": 0,
        "internal_count": 30,
        "external_count": 18,
    },
}
#: The running job: 60 of its 100 rows processed.
RUNNING_ROWS, RUNNING_TOTAL = 60, 100
RUNNING_BODY = {
    "job_id": JOB_ID,
    "status": "PROGRESS",
    "progress": {"current": RUNNING_ROWS, "total": RUNNING_TOTAL,
                 "status": f"Procesando fila {RUNNING_ROWS} de {RUNNING_TOTAL}"},
}
#: SDK processes appending to jobs of their own while the running job is read, and the pause
#: between two rows of one of them (the SDK flushes every 50 ms: about 160 commits/s in all).
WRITERS, WRITER_PAUSE = 8, 0.005
WRITER = """
import sys, time
import jobtracker

url, key, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
with jobtracker.connect(url, api_key=key) as tracker:
    job_id = tracker.create_job()
    with tracker.job(job_id) as job:
        job.started()
        job.flush()
        print("writing", flush=True)
        row = 1
        while True:
            job.row_succeeded(row, f"r{row}@uni.edu", internal=row % 2 == 0)
            row += 1
            time.sleep(pause)
"""
PG_ENV = "JOBTRACKER_BENCH_PG_URL"
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
BARE_SERVER = Path(__file__).with_name("bare_server.py")


def load_for(config: BenchConfig) -> Load:
    """32 connections on one wrk thread; 5 s a leg, 1 s in quick mode."""
    return Load(threads=1, connections=32, seconds=1 if config.quick else 5)


def pairs_for(config: BenchConfig) -> int:
    """Legs per side in a round: 4 (20 s each side), 1 in quick mode."""
    return 1 if config.quick else 4


# --- the store and its one job ---------------------------------------------------------------


async def _seed(url: str) -> str:
    store = make_store(url)
    await store.open()
    try:
        issued = await issue_key(store, "bench")
        await store.create_job(JOB_ID, Created(owner=issued.record.key_id, total=50))
        return issued.secret
    finally:
        await store.close()


def seed_store(url: str) -> str:
    """Put the seed's SUCCESS job in the store at `url`, reported by the demo worker through the
    SDK straight into the store; return its owner's key."""
    secret = asyncio.run(_seed(url))
    quiet = Simulation(email_failure_rate=0.0)
    with jobtracker.connect(url, api_key=secret) as tracker, tracker.job(JOB_ID) as job:
        issue_credentials(job, demo_recipients(), quiet)
    return secret


async def _seed_running(url: str) -> str:
    store = make_store(url)
    await store.open()
    try:
        issued = await issue_key(store, "bench")
        await store.create_job(JOB_ID, Created(owner=issued.record.key_id, total=RUNNING_TOTAL))
        rows = [NewEvent(f"row-{row}", RowSucceeded(row=row, email=f"r{row}@uni.edu",
                                                       internal=row % 2 == 0))
                for row in range(1, RUNNING_ROWS + 1)]
        await store.append(JOB_ID, [NewEvent("start", Started()), *rows])
        return issued.secret
    finally:
        await store.close()


def seed_running(url: str) -> str:
    """Put a job still running (60 rows of 100 processed) in the store at `url`; return its
    owner's key."""
    return asyncio.run(_seed_running(url))


@contextlib.contextmanager
def sdk_writers(url: str, key: str, workdir: Path, count: int = WRITERS) -> Iterator[None]:
    """`count` processes appending rows through the SDK straight into the store at `url`, each
    to a job of its own, until the block ends."""
    with contextlib.ExitStack() as stack:
        for number in range(count):
            stack.enter_context(serving(
                [python(), "-c", WRITER, url, key, str(WRITER_PAUSE)],
                workdir / f"writer-{number}.log", ready_marker="writing",
            ))
        yield


@contextlib.contextmanager
def sqlite_store(workdir: Path) -> Iterator[str]:
    """A fresh SQLite file in `workdir`."""
    yield f"sqlite:///{workdir / 'get-bench.db'}"


def _psql(server_url: str, sql: str) -> None:
    subprocess.run(["psql", server_url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql],
                   check=True, capture_output=True)


@contextlib.contextmanager
def postgres_store(workdir: Path) -> Iterator[str]:
    """A fresh PostgreSQL database with a unique name, dropped afterwards."""
    server_url = os.environ.get(PG_ENV, PG_DEFAULT)
    name = f"jobtracker_bench_{os.getpid()}_{secrets.token_hex(4)}"
    _psql(server_url, f"CREATE DATABASE {name}")
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        _psql(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def postgres_unavailable() -> str | None:
    """Why the PostgreSQL variant cannot run here, or None when it can."""
    try:
        make_store(os.environ.get(PG_ENV, PG_DEFAULT))
    except ConfigError as exc:
        return f"make_store refuses postgresql:// ({exc.detail})"
    return None


# --- servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def jobtracker_server(store_url: str, workdir: Path, workers: int = 1) -> Iterator[str]:
    """`jobtracker serve` on a free port; yields its base URL."""
    port = free_port()
    cmd = [python(), "-m", "jobtracker", "serve", "--store", store_url, "--port", str(port)]
    if workers != 1:
        cmd += ["--workers", str(workers)]
    log = workdir / f"serve-{port}.log"
    with serving(cmd, log, ready_count=workers):
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def bare_server(key: str, body: bytes, workdir: Path) -> Iterator[str]:
    """The reference server on a free port; yields its base URL."""
    port = free_port()
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    cmd = [python(), str(BARE_SERVER), "--port", str(port), "--job-id", JOB_ID,
           "--key", key, "--body", str(body_file)]
    with serving(cmd, workdir / f"bare-{port}.log"):
        yield f"http://127.0.0.1:{port}"


def _job_url(base: str) -> str:
    return f"{base}/api/v1/jobs/{JOB_ID}"


def check_same_body(
    subject: str, reference: str, key: str, expected: dict[str, object] = SEED_BODY
) -> bytes:
    """Both servers answer 200 with `expected` (the seed's body), byte for byte; return those
    bytes."""
    headers = {"X-API-Key": key}
    status, body = fetch(_job_url(subject), headers)
    if status != 200 or orjson.loads(body) != expected:
        raise RuntimeError(f"jobtracker answered {status} {body!r}, not {expected!r}")
    ref_status, ref_body = fetch(_job_url(reference), headers)
    if (ref_status, ref_body) != (200, body):
        raise RuntimeError(f"the reference answered {ref_status} {ref_body!r}, not {body!r}")
    return body


# --- one round -------------------------------------------------------------------------------


def _median(results: list[LoadResult], field: Callable[[LoadResult], float]) -> float:
    return statistics.median(field(r) for r in results)


def interleaved(subject: str, reference: str, key: str, load: Load, pairs: int) -> Round:
    """Warm both up, then load them in turns (S R R S S R ...); each side's median leg counts.

    The machine is shared: another process's burst lasts seconds, so short legs taken in turns
    put both sides under the same weather, and the median drops a leg that caught a storm.
    """
    headers = {"X-API-Key": key}
    warm = Load(load.threads, load.connections, 1)
    for base in (subject, reference):
        run_load(_job_url(base), headers, warm)
    legs: dict[str, list[LoadResult]] = {subject: [], reference: []}
    for pair in range(pairs):
        order = (subject, reference) if pair % 2 == 0 else (reference, subject)
        for base in order:
            legs[base].append(run_load(_job_url(base), headers, load))
    ours, theirs = legs[subject], legs[reference]
    timeouts = sum(r.timeouts for r in ours + theirs)
    notes = (() if have_wrk() else (WRK_MISSING,)) + (
        (f"wrk counted {timeouts} requests over its 2 s timeout in a round",) if timeouts else ()
    )
    return Round(
        subject=_median(ours, lambda r: r.requests_per_s),
        reference=_median(theirs, lambda r: r.requests_per_s),
        extras={
            "p50_ms": _median(ours, lambda r: r.p50_ms),
            "p99_ms": _median(ours, lambda r: r.p99_ms),
            "ref_p50_ms": _median(theirs, lambda r: r.p50_ms),
            "ref_p99_ms": _median(theirs, lambda r: r.p99_ms),
        },
        notes=notes,
    )


StoreFactory = Callable[[Path], contextlib.AbstractContextManager[str]]


def get_vs_bare(
    make: StoreFactory, *, running: bool = False, writers: int = 0
) -> Callable[[BenchConfig], Round]:
    """A round of jobtracker's GET against the bare handler, on the store `make` provides: of
    the seed's finished job, or of a `running` one (with `writers` SDK processes appending to
    other jobs of the store meanwhile)."""
    seed, expected = (seed_running, RUNNING_BODY) if running else (seed_store, SEED_BODY)

    def run(config: BenchConfig) -> Round:
        with tempfile.TemporaryDirectory(prefix="get-", dir=config.workdir) as tmp:
            workdir = Path(tmp)
            with make(workdir) as url:
                key = seed(url)
                with jobtracker_server(url, workdir) as ours, \
                        sdk_writers(url, key, workdir, writers):
                    body = fetch(_job_url(ours), {"X-API-Key": key})[1]
                    with bare_server(key, body, workdir) as bare:
                        check_same_body(ours, bare, key, expected)
                        return interleaved(ours, bare, key, load_for(config), pairs_for(config))

    return run


def two_workers_vs_one(config: BenchConfig) -> Round:
    """A round of `serve --workers 2` against `serve --workers 1` on one SQLite file."""
    with tempfile.TemporaryDirectory(prefix="get-", dir=config.workdir) as tmp:
        workdir = Path(tmp)
        with sqlite_store(workdir) as url:
            key = seed_store(url)
            with jobtracker_server(url, workdir, workers=2) as two, \
                    jobtracker_server(url, workdir, workers=1) as one:
                check_same_body(two, one, key)
                return interleaved(two, one, key, load_for(config), pairs_for(config))


def _fast_enough(min_ratio: float) -> Callable[[float, dict[str, float]], bool]:
    return lambda ratio, extras: ratio >= min_ratio and extras["p99_ms"] <= 5.0


_WRK = "wrk -t1 -c32 -d5s --latency, 4 legs a side in turns S R R S S R R S, median leg"
BENCHMARKS = [
    Benchmark(
        name="get-sqlite",
        subject=f"GET /api/v1/jobs/{{id}}, seed SUCCESS body, SQLite, serve ({_WRK})",
        reference="bare aiohttp handler: same route, same bytes, X-API-Key present and equal",
        unit="req/s",
        target=">= 0.8x the reference, p99 <= 5 ms",
        run=get_vs_bare(sqlite_store),
        meets=_fast_enough(0.8),
    ),
    Benchmark(
        name="get-postgresql",
        subject=f"GET /api/v1/jobs/{{id}}, seed SUCCESS body, PostgreSQL, serve ({_WRK})",
        reference="bare aiohttp handler: same route, same bytes, X-API-Key present and equal",
        unit="req/s",
        target=">= 0.8x the reference, p99 <= 5 ms",
        run=get_vs_bare(postgres_store),
        meets=_fast_enough(0.8),
        unavailable=postgres_unavailable,
    ),
    Benchmark(
        name="get-running-sqlite",
        subject=f"GET /api/v1/jobs/{{id}}, a PROGRESS job (60 of 100 rows), SQLite, serve ({_WRK})",
        reference="bare aiohttp handler: same route, same bytes, X-API-Key present and equal",
        unit="req/s",
        target=">= 0.7x the reference, p99 <= 5 ms",
        run=get_vs_bare(sqlite_store, running=True),
        meets=_fast_enough(0.7),
    ),
    Benchmark(
        name="get-running-sqlite-writers",
        subject=f"GET as get-running-sqlite while {WRITERS} SDK processes append rows to jobs of "
                f"their own in the same file, a row each every {WRITER_PAUSE * 1000:g} ms "
                f"({_WRK})",
        reference="bare aiohttp handler serving the same bytes, the same writers running",
        unit="req/s",
        target=">= 0.5x the reference",
        run=get_vs_bare(sqlite_store, running=True, writers=WRITERS),
        meets=lambda ratio, extras: ratio >= 0.5,
    ),
    Benchmark(
        name="get-running-postgresql",
        subject=f"GET /api/v1/jobs/{{id}}, a PROGRESS job (60 of 100 rows), PostgreSQL, serve "
                f"({_WRK})",
        reference="bare aiohttp handler: same route, same bytes, X-API-Key present and equal",
        unit="req/s",
        target=">= 0.5x the reference",
        run=get_vs_bare(postgres_store, running=True),
        meets=lambda ratio, extras: ratio >= 0.5,
        unavailable=postgres_unavailable,
    ),
    Benchmark(
        name="get-workers",
        subject=f"GET as above, SQLite, serve --workers 2 ({_WRK})",
        reference="the same with serve --workers 1",
        unit="req/s",
        target="> 1.0x the reference (two processes help on this machine)",
        run=two_workers_vs_one,
        meets=lambda ratio, extras: ratio > 1.0,
    ),
]
