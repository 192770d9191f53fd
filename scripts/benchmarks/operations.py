"""What operations cost: metrics and the JSON access log on the GET hot path, and a /metrics
scrape as the store grows.

`get-metrics`: three `jobtracker serve` processes on one SQLite file holding the seed's SUCCESS
job, loaded in turns with the same wrk settings: `--no-metrics` (the reference), the default
(metrics on, the subject) and metrics on with `--access-log --log-format json` (its lines written to
a file). `metrics-scrape`: two servers, one on a store of 1,000 jobs and one on 1,000,000, each
scraped in turns; the subject is the big store's median scrape time, the reference the small one's.
The jobs are inserted by SQL straight into `jobs`, whose triggers keep the counts /metrics reads.
`job-counts-triggers`: what those triggers cost writes at their worst, when every write changes a
job's status: 32 tasks create jobs and take each through started, progress and succeeded, one
append at a time, on a SQLite store as migrated and on one whose counting triggers were dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from jobtracker.domain.events import (
    Created,
    NewEvent,
    ProgressReported,
    Started,
    Succeeded,
    new_event_id,
)
from jobtracker.store import SqliteStore, make_store

from .base import BenchConfig, Benchmark, Round
from .get import JOB_ID, load_for, pairs_for, seed_store
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

#: Server flags of each side of `get-metrics`.
VARIANTS = {
    "off": ["--no-metrics"],
    "on": [],
    "json_log": ["--access-log", "--log-format", "json"],
}
BIG_JOBS, SMALL_JOBS = 1_000_000, 1_000
QUICK_BIG_JOBS = 20_000
#: Scrapes per side per turn, and turns.
SCRAPES, TURNS = 50, 6


@contextlib.contextmanager
def _server(store_url: str, workdir: Path, name: str, flags: list[str]) -> Iterator[str]:
    port = free_port()
    cmd = [python(), "-m", "jobtracker", "serve", "--store", store_url, "--port", str(port),
           *flags]
    with serving(cmd, workdir / f"serve-{name}.log"):
        yield f"http://127.0.0.1:{port}"


# --- GET with metrics and the JSON access log ----------------------------------------------------


def run_get_metrics(config: BenchConfig) -> Round:
    """One round: the three servers loaded in turns; each side's median leg counts."""
    with tempfile.TemporaryDirectory(prefix="ops-", dir=config.workdir) as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'ops.db'}"
        key = seed_store(url)
        with contextlib.ExitStack() as servers:
            bases = {name: servers.enter_context(_server(url, workdir, name, flags))
                     for name, flags in VARIANTS.items()}
            return _interleaved(bases, key, config)


def _interleaved(bases: dict[str, str], key: str, config: BenchConfig) -> Round:
    headers = {"X-API-Key": key}
    load = load_for(config)
    legs: dict[str, list[LoadResult]] = {name: [] for name in bases}
    for name, base in bases.items():  # warm-up, untimed: the finished body gets cached
        status, _ = fetch(f"{base}/api/v1/jobs/{JOB_ID}", headers)
        assert status == 200, f"{name} answered {status}"
        run_load(f"{base}/api/v1/jobs/{JOB_ID}", headers,
                 Load(load.threads, load.connections, 1))
    names = list(bases)
    for turn in range(pairs_for(config) * 2):
        shift = turn % len(names)  # every side goes first, second and third in turn
        for name in names[shift:] + names[:shift]:
            legs[name].append(run_load(f"{bases[name]}/api/v1/jobs/{JOB_ID}", headers, load))
    rps = {name: statistics.median(r.requests_per_s for r in results)
           for name, results in legs.items()}
    return Round(
        subject=rps["on"],
        reference=rps["off"],
        extras={
            "json_log_ratio": rps["json_log"] / rps["off"],
            "json_log_req_s": rps["json_log"],
            "p99_ms": statistics.median(r.p99_ms for r in legs["on"]),
        },
        notes=() if have_wrk() else (WRK_MISSING,),
    )


# --- a scrape with a million jobs --------------------------------------------------------------


def _fill(path: Path, jobs: int) -> None:
    """A migrated store with `jobs` jobs, spread over the five statuses, inserted by SQL."""

    async def migrate() -> None:
        store = make_store(f"sqlite:///{path}")
        await store.open()
        await store.close()

    asyncio.run(migrate())
    with sqlite3.connect(path) as conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO jobs (job_id, owner, status, version, updated_position) "
            "SELECT printf('job-%08d', i), 'key_bench', "
            "CASE i % 5 WHEN 0 THEN 'PENDING' WHEN 1 THEN 'STARTED' WHEN 2 THEN 'PROGRESS' "
            "WHEN 3 THEN 'SUCCESS' ELSE 'FAILURE' END, 1, 0 FROM n",
            (jobs,),
        )


def _count_star_ms(path: Path) -> float:
    """What a scrape would cost if it counted: one `COUNT(*) ... GROUP BY status`."""
    with sqlite3.connect(path) as conn:
        began = time.perf_counter()
        conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
        return (time.perf_counter() - began) * 1000


def _scrape_ms(connection: http.client.HTTPConnection) -> float:
    began = time.perf_counter()
    connection.request("GET", "/metrics")
    answer = connection.getresponse()
    body = answer.read()
    elapsed = (time.perf_counter() - began) * 1000
    if answer.status != 200 or b"jobtracker_jobs{" not in body:
        raise RuntimeError(f"/metrics answered {answer.status} without jobtracker_jobs")
    return elapsed


def run_scrape(config: BenchConfig) -> Round:
    """One round: both servers scraped in turns over keep-alive connections; medians."""
    big = QUICK_BIG_JOBS if config.quick else BIG_JOBS
    with tempfile.TemporaryDirectory(prefix="ops-", dir=config.workdir) as tmp:
        workdir = Path(tmp)
        sizes = {"small": SMALL_JOBS, "big": big}
        for name, jobs in sizes.items():
            _fill(workdir / f"{name}.db", jobs)
        times: dict[str, list[float]] = {name: [] for name in sizes}
        with contextlib.ExitStack() as servers:
            connections = {}
            for name in sizes:
                base = servers.enter_context(
                    _server(f"sqlite:///{workdir / f'{name}.db'}", workdir, name, []))
                connections[name] = http.client.HTTPConnection(*base[7:].split(":"))
                servers.callback(connections[name].close)
                _scrape_ms(connections[name])  # warm-up
            for turn in range(2 if config.quick else TURNS):
                for name in (("small", "big") if turn % 2 == 0 else ("big", "small")):
                    times[name] += [_scrape_ms(connections[name]) for _ in range(SCRAPES)]
        return Round(
            subject=statistics.median(times["big"]),
            reference=statistics.median(times["small"]),
            extras={"jobs": float(big), "count_star_ms": _count_star_ms(workdir / "big.db"),
                    "p90_big_ms": statistics.quantiles(times["big"], n=10)[-1]},
        )


# --- the counting triggers' cost on writes ------------------------------------------------------

COUNTING_TRIGGERS = ("job_counts_insert", "job_counts_update", "job_counts_delete")
CHURN_TASKS = 32


async def _status_churn(path: Path, jobs: int, *, triggers: bool) -> float:
    """Writes per second (a creation and three status-changing appends per job)."""
    store = SqliteStore(str(path))
    await store.open()
    if not triggers:
        with sqlite3.connect(path) as conn:
            for name in COUNTING_TRIGGERS:
                conn.execute(f"DROP TRIGGER {name}")

    async def work(job_ids: list[str]) -> None:
        for job_id in job_ids:
            await store.create_job(job_id, Created(owner="bench"))
            for event in (Started(), ProgressReported(1, 2), Succeeded()):
                await store.append(job_id, [NewEvent(new_event_id(), event)])

    names = [f"job-{n}" for n in range(jobs)]
    began = time.perf_counter()
    await asyncio.gather(*(work(names[n::CHURN_TASKS]) for n in range(CHURN_TASKS)))
    elapsed = time.perf_counter() - began
    await store.close()
    return 4 * jobs / elapsed


def run_trigger_cost(config: BenchConfig) -> Round:
    """One round: without, with, with, without (drift cancels out), a fresh file each time."""
    jobs = 500 if config.quick else 3_000
    rates: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="ops-", dir=config.workdir) as tmp:
        for n, triggers in enumerate((False, True, True, False)):
            path = Path(tmp) / f"churn-{n}.db"
            rates[triggers].append(asyncio.run(_status_churn(path, jobs, triggers=triggers)))
    return Round(subject=statistics.mean(rates[True]), reference=statistics.mean(rates[False]))


_WRK = "wrk -t1 -c32 -d5s --latency, 4 legs a side in turns, median leg"
BENCHMARKS = [
    Benchmark(
        name="get-metrics",
        subject=f"GET /api/v1/jobs/{{id}} (seed SUCCESS body, SQLite), metrics on ({_WRK})",
        reference="the same server with --no-metrics; 'more' has metrics + JSON access log",
        unit="req/s",
        target=">= 0.9x the reference; with the JSON access log as well >= 0.75x",
        run=run_get_metrics,
        meets=lambda ratio, extras: ratio >= 0.9 and extras["json_log_ratio"] >= 0.75,
    ),
    Benchmark(
        name="metrics-scrape",
        subject=f"median ms of a /metrics scrape, SQLite store of {BIG_JOBS:,} jobs",
        reference=f"the same with {SMALL_JOBS:,} jobs ('more': what one COUNT(*) would cost)",
        unit="ms",
        target="<= 1.5x the reference",
        run=run_scrape,
        meets=lambda ratio, extras: ratio <= 1.5,
        higher_is_better=False,
    ),
    Benchmark(
        name="job-counts-triggers",
        subject=f"writes/s, {CHURN_TASKS} tasks each creating jobs and appending started, "
        "progress, succeeded one at a time (every write changes a status), SQLite as migrated",
        reference="the same with the job_counts triggers dropped",
        unit="writes/s",
        # At worst: a real job changes status four times in its life and reports many rows.
        target=">= 0.9x the reference even when every write changes a status",
        run=run_trigger_cost,
        meets=lambda ratio, extras: ratio >= 0.9,
    ),
]
