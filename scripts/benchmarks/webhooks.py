"""Webhooks: how soon a receiver hears of a finished job, and what delivering costs the appends.

`webhooks-sqlite`: 2,000 started jobs (200 in quick mode) are finished by 32 concurrent HTTP
clients (`succeeded` appends) against `jobtracker serve` on SQLite with one subscription to
`job.succeeded`, its receiver an aiohttp server on loopback. The subject is the appends/s of that
burst flat out (the median of 3 bursts in turns with the reference's, per round); the reference is
the same burst against a server with `--webhooks off`. Extras:
the median and p99 latency from each terminal append's acknowledgement (the 200 the client got)
to the moment the receiver answered that job's delivery 200, in a third leg where the 2,000 jobs
finish over 2 seconds, and the p99 of the flat-out burst, where deliveries queue behind appends.
The receiver runs in a process of its own (so its work does not slow the load generator), and so
does the server's webhook dispatcher (as `serve` runs it, at the lowest CPU priority). Not
covered: PostgreSQL, several subscriptions, slow or failing receivers (the tests cover those for
correctness, not speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from jobtracker.store import make_store
from jobtracker.store.keys import issue_key

from .base import BenchConfig, Benchmark, Round
from .get import sqlite_store
from .httpload import free_port, python, serving

CLIENTS = 32


async def _key(store_url: str) -> str:
    store = make_store(store_url)
    await store.open()
    try:
        return (await issue_key(store, "bench")).secret
    finally:
        await store.close()


def _receiver_main(port: int, expected: int, out: str) -> None:
    """The receiver, in a process of its own so its work does not slow the load generator:
    answers every delivery 200 at once and, once `expected` jobs were heard of, writes when
    (`time.monotonic`, the same clock in every process) to `out`."""
    asyncio.run(_receive(port, expected, Path(out)))


async def _receive(port: int, expected: int, out: Path) -> None:
    answered: dict[str, float] = {}
    all_in = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        answered.setdefault(body["data"]["job_id"], time.monotonic())
        if len(answered) >= expected:
            all_in.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_in.wait(), 120)
    await asyncio.to_thread(out.write_bytes, orjson.dumps(answered))
    await runner.cleanup()


async def _call(http: aiohttp.ClientSession, url: str, key: str, body: Any) -> Any:
    async with http.post(url, json=body, headers={"X-API-Key": key}) as answer:
        if answer.status >= 300:
            raise RuntimeError(f"{url}: {answer.status} {await answer.text()}")
        return await answer.json()


async def _burst(base: str, key: str, jobs: int, receiver: str | None,
                 pace: float | None) -> tuple[float, dict[str, float]]:
    """Create and start `jobs` jobs, then finish them, as fast as possible or `pace` a second:
    appends/s, ack times."""
    connector = aiohttp.TCPConnector(limit=CLIENTS)
    async with aiohttp.ClientSession(connector=connector) as http:
        if receiver is not None:
            await _call(http, f"{base}/api/v1/webhooks", key,
                        {"url": receiver, "events": ["job.succeeded"]})
        ids = [f"bench-{n:05d}" for n in range(jobs)]
        queue = list(ids)

        async def prepare() -> None:
            while queue:
                job_id = queue.pop()
                await _call(http, f"{base}/api/v1/jobs", key, {"job_id": job_id})
                await _call(http, f"{base}/api/v1/jobs/{job_id}/events", key,
                            [{"type": "started"}])

        await asyncio.gather(*(prepare() for _ in range(CLIENTS)))
        acked: dict[str, float] = {}
        queue = list(ids)

        async def finish() -> None:
            while queue:
                job_id = queue.pop()
                if pace is not None:  # job n is finished n / pace seconds into the burst
                    await asyncio.sleep(began + (jobs - len(queue)) / pace - time.monotonic())
                await _call(http, f"{base}/api/v1/jobs/{job_id}/events", key,
                            [{"type": "succeeded"}])
                acked[job_id] = time.monotonic()

        began = time.monotonic()
        await asyncio.gather(*(finish() for _ in range(CLIENTS)))
        rate = jobs / (time.monotonic() - began)
    return rate, acked


def _serve(store_url: str, workdir: Path, webhooks: bool) -> Any:
    port = free_port()
    cmd = [python(), "-m", "jobtracker", "serve", "--store", store_url, "--port", str(port),
           "--webhooks", "on" if webhooks else "off", "--webhook-allow-http",
           "--webhook-allow-private", "--no-metrics"]
    return port, serving(cmd, workdir / f"serve-{port}.log")


async def _side(
    workdir: Path, jobs: int, webhooks: bool, pace: float | None = None
) -> tuple[float, list[float]]:
    folder = Path(tempfile.mkdtemp(prefix=f"{'on' if webhooks else 'off'}-{pace or 'flat'}-",
                                   dir=workdir))
    with sqlite_store(folder) as store_url:
        key = await _key(store_url)
        port, server = _serve(store_url, workdir, webhooks)
        with server:
            if not webhooks:
                rate, _ = await _burst(f"http://127.0.0.1:{port}", key, jobs, None, pace)
                return rate, []
            hook_port, out = free_port(), folder / "answered.json"
            receiver = multiprocessing.get_context("spawn").Process(
                target=_receiver_main, args=(hook_port, jobs, str(out)))
            receiver.start()
            try:
                await _listening(hook_port)
                rate, acked = await _burst(f"http://127.0.0.1:{port}", key, jobs,
                                           f"http://127.0.0.1:{hook_port}/hook", pace)
                await asyncio.to_thread(receiver.join, 130)
            finally:
                receiver.kill()
            answered = orjson.loads(out.read_bytes())
    if len(answered) < jobs:
        raise RuntimeError(f"{len(answered)} of {jobs} delivered")
    return rate, [max(0.0, answered[j] - acked[j]) * 1000 for j in acked]


async def _listening(port: int) -> None:
    for _ in range(400):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise RuntimeError(f"the receiver did not listen on {port}")


_ROUNDS = [0]
#: Seconds over which the latency leg finishes its jobs ("2,000 jobs within a few seconds").
SPREAD = 2.0


#: Bursts per side in a round: a burst lasts about half a second, so one pair says little on a
#: shared machine; the round compares the medians of several, taken in turns.
PAIRS = 3


def webhooks_round(config: BenchConfig) -> Round:
    """One round: `PAIRS` bursts flat out with webhooks on and as many off, each on a fresh
    SQLite file, in turns (which side goes first alternates from round to round, so a machine
    growing busier or quieter favours neither); the medians are compared. Then the latency leg:
    the same jobs finished over `SPREAD` seconds."""
    jobs = 200 if config.quick else 2000
    _ROUNDS[0] += 1
    on: list[float] = []
    off: list[float] = []
    backlogs: list[float] = []
    with tempfile.TemporaryDirectory(dir=config.workdir) as tmp:
        workdir = Path(tmp)
        for pair in range(1 if config.quick else PAIRS):
            for webhooks in (True, False) if (_ROUNDS[0] + pair) % 2 else (False, True):
                rate, backlog = asyncio.run(_side(workdir, jobs, webhooks=webhooks))
                (on if webhooks else off).append(rate)
                backlogs += backlog
        _, latencies = asyncio.run(_side(workdir, jobs, webhooks=True, pace=jobs / SPREAD))
    return Round(statistics.median(on), statistics.median(off), {
        "delivery_p50_ms": statistics.median(latencies),
        "delivery_p99_ms": statistics.quantiles(latencies, n=100)[98],
        "flat_out_p99_ms": statistics.quantiles(backlogs, n=100)[98],
    })


BENCHMARKS = [
    Benchmark(
        name="webhooks-sqlite",
        subject="appends/s finishing 2,000 started jobs flat out (32 HTTP clients), SQLite, one "
                "subscription to job.succeeded, receiver on loopback",
        reference="the same burst with `serve --webhooks off`",
        unit="appends/s",
        target=">= 0.85x the reference; ack-to-delivery p99 <= 250 ms with the 2,000 jobs "
               "finishing over 2 s",
        run=webhooks_round,
        meets=lambda ratio, extras: ratio >= 0.85 and extras["delivery_p99_ms"] <= 250,
        notes={"latency": "delivery_p50/p99: jobs finished over 2 s (1,000/s); flat_out_p99: "
                          "the flat-out burst, where deliveries queue behind the appends"},
    ),
]
