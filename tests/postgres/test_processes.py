"""Two API servers and four worker processes on one database agree on every job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
ROWS_PER_WORKER = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def jobtracker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobtracker", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )


def wait_until_serving(base: str, server: subprocess.Popen[str]) -> None:
    for _ in range(200):
        if server.poll() is not None:
            raise AssertionError(f"server exited: {server.stderr.read() if server.stderr else ''}")
        try:
            requests.get(f"{base}/api/v1/jobs/none", timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError(f"{base} never answered")


def read_job(server: str, headers: dict[str, str]) -> Any:
    answer = requests.get(f"{server}/api/v1/jobs/bulk-1", headers=headers, timeout=10)
    assert answer.status_code == 200
    return answer.json()


@pytest.fixture
def two_servers(pg_url: str) -> Iterator[tuple[str, str]]:
    """Servers A and B started at once on a fresh schema (so they also race to migrate it)."""
    ports = [free_port(), free_port()]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "jobtracker", "serve", "--store", pg_url, "--port", str(port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for port in ports
    ]
    try:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base, server in zip(bases, servers, strict=True):
            wait_until_serving(base, server)
        yield bases[0], bases[1]
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=10)
            if server.stderr:
                server.stderr.close()


def test_job_created_on_one_server_and_reported_by_workers_reads_the_same_on_another(
    pg_url: str, two_servers: tuple[str, str]
) -> None:
    """A job made through server A, reported by four worker processes, reads identically via B."""
    server_a, server_b = two_servers
    secret = jobtracker("keys", "create", "--name", "ci", "--store", pg_url).stdout.splitlines()[-1]
    headers = {"X-API-Key": secret}
    total = WORKERS * ROWS_PER_WORKER
    created = requests.post(
        f"{server_a}/api/v1/jobs", json={"job_id": "bulk-1", "total": total}, headers=headers,
        timeout=10,
    )
    assert created.status_code == 201
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.postgres.worker_process", pg_url, "bulk-1",
             str(w * ROWS_PER_WORKER), str(ROWS_PER_WORKER)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for w in range(WORKERS)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0] * WORKERS
    in_progress = [read_job(server, headers) for server in two_servers]
    assert in_progress[0] == in_progress[1]
    assert in_progress[0]["progress"]["current"] == total
    failed_rows = [row for row in range(total) if row % 7 == 0]
    done = requests.post(
        f"{server_b}/api/v1/jobs/bulk-1/events", json=[{"type": "succeeded", "event_id": "end"}],
        headers=headers, timeout=10,
    )
    # created, one outcome per row, one e-mail per successful row, succeeded
    version = 1 + total + (total - len(failed_rows)) + 1
    assert done.json() == {"appended": 1, "duplicates": 0, "version": version}
    bodies = [read_job(server, headers) for server in two_servers]
    assert bodies[0] == bodies[1]
    result = bodies[0]["result"]
    assert (result["total"], result["failed"], result["successful"]) == (
        total, len(failed_rows), total - len(failed_rows),
    )
    assert result["emails_sent"] == total - len(failed_rows)
    assert [e["row"] for e in result["errors"]] == failed_rows
