"""Load: GETs at 64 connections while 8 SDK workers append at full speed.

Zero errors, zero lost events, exact counters. CI runs `JOBTRACKER_LOAD_SECONDS` (default 5);
the full form of the reliability issue is 60 (see RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

import jobtracker
from tests.reliability.test_crash import ROOT, _free_port, _wait_for_port

SECONDS = float(os.environ.get("JOBTRACKER_LOAD_SECONDS", "5"))
CONNECTIONS = 64
WORKERS = 8


def _key(store: str, scope: str, cwd: Path) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "jobtracker", "keys", "create", "--name", scope, "--scope", scope,
         "--store", store, *(["--all-owners"] if scope == "worker" else [])],
        capture_output=True, text=True, check=True, cwd=cwd,
    )
    return created.stdout.strip().splitlines()[-1]


async def _hammer(base: str, key: str, jobs: list[str], until: float) -> tuple[list[float], int]:
    """GET the jobs in turn on `CONNECTIONS` connections; latencies (ms) and non-200 answers."""
    latencies: list[float] = []
    errors = 0

    async def connection(n: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.monotonic() < until:
            started = time.perf_counter()
            async with session.get(f"{base}/{jobs[n % len(jobs)]}") as response:
                await response.read()
                if response.status != 200:
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)
            n += 1

    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, headers={"X-API-Key": key}) as session:
        await asyncio.gather(*(connection(n, session) for n in range(CONNECTIONS)))
    return latencies, errors


def test_gets_under_write_load_see_no_errors_and_counts_stay_exact(tmp_path: Path) -> None:
    """Reads stay correct and fast while eight workers write as fast as they can."""
    store = f"sqlite:///{tmp_path / 'load.db'}"
    owner, worker_key = _key(store, "owner", tmp_path), _key(store, "worker", tmp_path)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jobtracker", "serve", "--store", store, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        url = f"http://127.0.0.1:{port}"
        with jobtracker.connect(url, api_key=owner) as tracker:
            jobs = [tracker.create_job(job_id=f"load-{n}") for n in range(WORKERS)]
        writers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.load_writer",
                 url if n % 2 else store, worker_key if n % 2 else owner, job_id, str(SECONDS)],
                cwd=ROOT, stdout=subprocess.PIPE, text=True,
            )
            for n, job_id in enumerate(jobs)
        ]
        latencies, errors = asyncio.run(
            _hammer(f"{url}/api/v1/jobs", owner, jobs, time.monotonic() + SECONDS)
        )
        reported = [int(w.communicate(timeout=120)[0]) for w in writers]
        assert all(w.returncode == 0 for w in writers)
        with jobtracker.connect(url, api_key=owner) as tracker:
            finals = [tracker.wait(job_id, timeout=30) for job_id in jobs]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert errors == 0
    for rows, final in zip(reported, finals, strict=True):
        result = final["result"]
        assert (result["total"], result["successful"], result["emails_sent"]) == (rows, rows, rows)
        assert result["internal_count"] == sum(1 for r in range(rows) if r % 3 == 0)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(f"\nload: {SECONDS:.0f} s, {len(latencies)} GETs at {CONNECTIONS} connections, "
          f"{errors} errors, p50 {latencies[len(latencies) // 2]:.1f} ms, p99 {p99:.1f} ms; "
          f"{sum(reported)} rows from {WORKERS} workers, all counted")
