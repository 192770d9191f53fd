"""GET /api/v1/jobs/{id} under wrk: `jobtracker serve` against a bare aiohttp handler.

Each round seeds a fresh store with the seed page's SUCCESS job (its exact body), starts both
servers as processes of their own, checks that they answer the same bytes, warms them up, then
loads them in turns (subject, reference, reference, subject, ...) with the same wrk settings, so a
drift in the machine's load hits both sides alike. A second benchmark compares `--workers 2` with
`--workers 1` the same way. The store is a URL: the PostgreSQL variant runs when `make_store`
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
from jobtracker.domain.events import Created
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


def check_same_body(subject: str, reference: str, key: str) -> bytes:
    """Both servers answer 200 with the seed's body, byte for byte; return those bytes."""
    headers = {"X-API-Key": key}
    status, body = fetch(_job_url(subject), headers)
    if status != 200 or orjson.loads(body) != SEED_BODY:
        raise RuntimeError(f"jobtracker answered {status} {body!r}, not the seed's body")
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


def get_vs_bare(make: StoreFactory) -> Callable[[BenchConfig], Round]:
    """A round of jobtracker's GET against the bare handler, on the store `make` provides."""

    def run(config: BenchConfig) -> Round:
        with tempfile.TemporaryDirectory(prefix="get-", dir=config.workdir) as tmp:
            workdir = Path(tmp)
            with make(workdir) as url:
                key = seed_store(url)
                with jobtracker_server(url, workdir) as ours:
                    body = fetch(_job_url(ours), {"X-API-Key": key})[1]
                    with bare_server(key, body, workdir) as bare:
                        check_same_body(ours, bare, key)
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
        target=">= 0.7x the reference, p99 <= 5 ms",
        run=get_vs_bare(sqlite_store),
        meets=_fast_enough(0.7),
    ),
    Benchmark(
        name="get-postgresql",
        subject=f"GET /api/v1/jobs/{{id}}, seed SUCCESS body, PostgreSQL, serve ({_WRK})",
        reference="bare aiohttp handler: same route, same bytes, X-API-Key present and equal",
        unit="req/s",
        target=">= 0.5x the reference, p99 <= 5 ms",
        run=get_vs_bare(postgres_store),
        meets=_fast_enough(0.5),
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
