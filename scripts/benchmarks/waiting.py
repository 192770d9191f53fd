"""Waiting without hammering: clients that wait on the server against clients polling every 2 s.

`waiting-cpu`: 1,000 clients watch 1,000 running jobs on one `jobtracker serve`, while a steady
trickle of appends (10/s, written straight into the SQLite file by another process, as an SDK
worker would) changes some of them. The subject keeps one event stream open per client; the same
clients holding `?wait=30` requests with If-None-Match are measured too (in 'more'); the reference
polls every 2 s as the seed page does. The figure is the server process's CPU seconds per minute,
read from /proc, in the same round.

`wait-latency-*`: from an acknowledged append to a waiting client holding the new body, p99 in ms —
the append made through the same server (`http`), or straight into the SQLite file by another
process (`other-process`, woken by the server's change feed). The reference is one plain GET round
trip on the same server, to show what a poll costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from jobtracker.domain.events import Created, NewEvent, ProgressReported, Started, new_event_id
from jobtracker.store.keys import hash_secret, issue_key
from jobtracker.store.sqlite import SqliteStore
from jobtracker.store.sqlite.log import SqliteLog

from .base import BenchConfig, Benchmark, Round
from .httpload import free_port, python, serving

BIG_TOTAL = 10**9


def seed_started_jobs(db: str, jobs: int, prefix: str = "wait") -> tuple[str, list[str]]:
    """A key and `jobs` started jobs owned by it, named `{prefix}-N`."""

    async def make_key() -> str:
        store = SqliteStore(db)
        await store.open()
        try:
            return (await issue_key(store, "bench")).secret
        finally:
            await store.close()

    secret = asyncio.run(make_key())
    log = SqliteLog(db)
    owner = log.find_key(hash_secret(secret))
    assert owner is not None
    ids = [f"{prefix}-{n}" for n in range(jobs)]
    for job_id in ids:
        log.create_job(job_id, Created(owner=owner.key_id, total=BIG_TOTAL))
        log.append(job_id, [NewEvent(new_event_id(), Started())])
    log.close()
    return secret, ids


@contextlib.contextmanager
def _server(workdir: str, jobs: int) -> Iterator[tuple[int, str, str, list[str], str]]:
    db = str(Path(tempfile.mkdtemp(dir=workdir)) / "wait.db")
    secret, ids = seed_started_jobs(db, jobs)
    port = free_port()
    cmd = [python(), "-m", "jobtracker", "serve", "--store", f"sqlite:///{db}", "--port", str(port)]
    with serving(cmd, Path(db).with_suffix(".log")) as server:
        yield server.pid, f"http://127.0.0.1:{port}/api/v1/jobs", secret, ids, db


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _poller(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
    await asyncio.sleep(random.uniform(0, 2))
    while not stop.is_set():
        async with session.get(url) as response:
            await response.read()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2)


async def _waiter(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
    etag = ""
    while not stop.is_set():
        async with session.get(f"{url}?wait=30", headers={"If-None-Match": etag}) as response:
            await response.read()
            etag = response.headers.get("ETag", etag)


async def _streamer(session: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
    async with session.get(f"{url}/stream") as response:
        while not stop.is_set() and await response.content.readany():
            pass


async def _trickle(db: str, ids: list[str], stop: asyncio.Event) -> None:
    """10 appends a second, written straight into the SQLite file as an SDK worker would.

    The appends come from this process, not through the server under test: their cost would be
    the same on both sides and only blur what is compared, the cost of clients waiting.
    """
    log = SqliteLog(db)
    try:
        count = 0
        while not stop.is_set():
            count += 1
            event = ProgressReported(current=count, total=BIG_TOTAL)
            job_id = random.choice(ids)
            await asyncio.to_thread(log.append, job_id, [NewEvent(new_event_id(), event)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
    finally:
        log.close()


async def _cpu_per_minute(pid: int, base: str, secret: str, ids: list[str], db: str,
                          mode: str, window: float, settle: float) -> float:
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None)
    headers = {"X-API-Key": secret}
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as s:
        client = {"stream": _streamer, "wait": _waiter, "poll": _poller}[mode]
        tasks = [asyncio.create_task(client(s, f"{base}/{job_id}", stop)) for job_id in ids]
        tasks.append(asyncio.create_task(_trickle(db, ids, stop)))
        await asyncio.sleep(settle)  # every client connected and settled into its rhythm
        before = _cpu_seconds(pid)
        await asyncio.sleep(window)
        used = _cpu_seconds(pid) - before
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return used / window * 60


def run_cpu(config: BenchConfig) -> Round:
    """One round: the same clients long-polling, then polling every 2 s."""
    # 30 s: the stream's heartbeat period and the long-poll's hold, so the window holds exactly one
    # heartbeat per stream and one timeout per long-poll client, not a lucky or unlucky share.
    clients, window, settle = (200, 3.0, 1.0) if config.quick else (1000, 30.0, 3.0)
    figures = {}
    for mode in ("stream", "wait", "poll"):
        with _server(config.workdir, clients) as (pid, base, secret, ids, db):
            figures[mode] = asyncio.run(
                _cpu_per_minute(pid, base, secret, ids, db, mode, window, settle)
            )
    return Round(subject=figures["stream"], reference=figures["poll"],
                 extras={"clients": clients, "window_s": window,
                         "long_poll_cpu_s_min": figures["wait"],
                         "long_poll_ratio": figures["wait"] / figures["poll"]})


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _latencies(base: str, secret: str, ids: list[str], db: str, via: str,
                     appends: int) -> tuple[list[float], list[float]]:
    """(append-to-seen latencies, plain GET round trips), in ms."""
    seen: dict[tuple[str, int], float] = {}
    acked: dict[tuple[str, int], float] = {}
    stop = asyncio.Event()
    headers = {"X-API-Key": secret}

    async def watch(session: aiohttp.ClientSession, job_id: str) -> None:
        etag = '"2"'
        while not stop.is_set():
            url = f"{base}/{job_id}?wait=30"
            async with session.get(url, headers={"If-None-Match": etag}) as response:
                await response.read()
                if response.status == 200:
                    etag = response.headers["ETag"]
                    seen[(job_id, int(etag.strip('"')))] = time.monotonic()

    log = SqliteLog(db) if via == "other-process" else None
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        watchers = [asyncio.create_task(watch(session, job_id)) for job_id in ids]
        await asyncio.sleep(1)
        round_trips = []
        for n in range(appends):
            job_id = ids[n % len(ids)]
            event = ProgressReported(current=n, total=BIG_TOTAL)
            if log is not None:
                batch = [NewEvent(new_event_id(), event)]
                version = (await asyncio.to_thread(log.append, job_id, batch)).version
            else:
                body = [{"type": "progress", "current": n, "total": BIG_TOTAL}]
                async with session.post(f"{base}/{job_id}/events", json=body) as response:
                    version = (await response.json())["version"]
            acked[(job_id, version)] = time.monotonic()
            started = time.monotonic()
            async with session.get(f"{base}/{ids[-1]}") as response:
                await response.read()
            round_trips.append((time.monotonic() - started) * 1000)
            await asyncio.sleep(0.02)
        await asyncio.sleep(1)
        stop.set()
        for task in watchers:
            task.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    if log is not None:
        log.close()
    missing = [k for k in acked if k not in seen]
    if missing:
        raise RuntimeError(f"{len(missing)} appends never reached their waiting client")
    return [max(0.0, (seen[k] - acked[k]) * 1000) for k in acked], round_trips


def _latency_round(via: str, config: BenchConfig) -> Round:
    jobs, appends = (20, 100) if config.quick else (100, 1000)
    with _server(config.workdir, jobs) as (_, base, secret, ids, db):
        waited, polled = asyncio.run(_latencies(base, secret, ids, db, via, appends))
    p99 = _percentile(waited, 0.99)
    return Round(subject=p99, reference=_percentile(polled, 0.99),
                 extras={"p50_ms": _percentile(waited, 0.5), "p99_ms": p99, "appends": appends})


BENCHMARKS = [
    Benchmark(
        name="waiting-cpu",
        subject="server CPU s/min, N clients on the event stream (long-poll with ?wait=30 in "
        "'more'), 10 appends/s by another process",
        reference="server CPU s/min, the same N clients polling every 2 s (the seed's loop)",
        unit="CPU s/min",
        target="<= 0.1x the pollers' CPU (>= 10x less)",
        run=run_cpu,
        meets=lambda ratio, extras: ratio <= 0.1,
        higher_is_better=False,
    ),
    *(
        Benchmark(
            name=f"wait-latency-{via}",
            subject=f"p99 ms from an acknowledged append ({via}) to the waiting client seeing it",
            reference="p99 ms of one plain GET round trip on the same server",
            unit="ms",
            target="p99 <= 50 ms",
            run=lambda config, via=via: _latency_round(via, config),  # type: ignore[misc]
            meets=lambda ratio, extras: extras["p99_ms"] <= 50,
            higher_is_better=False,
        )
        for via in ("http", "other-process")
    ),
]
