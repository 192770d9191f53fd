"""`jobtracker demo`: a 50-row job from PENDING to SUCCESS, watched with the seed's polling loop.

The server and the simulated worker each run in a process of their own, as they would in
production; this process plays the user, polling as the seed's page tells them to.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jobtracker.events import (
    EmailSent,
    Event,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    new_event_id,
)
from jobtracker.keys import issue_key
from jobtracker.store.sqlite import SqliteLog, SqliteStore

ROWS = 50
#: The seed's SUCCESS example: rows 12 and 37 fail with exactly these errors.
FAILING_ROWS = {
    12: ("invalido@test", "Invalid email: invalido@test"),
    37: ("duplicado@test.com", "Calificacion invalida"),
}
INTERNAL_SUCCESSES = 30


def demo_events(rows: int = ROWS) -> Iterator[Event]:
    """The simulated worker's events: 48 credentials (30 internal), 2 row errors, 48 e-mails."""
    yield Started()
    successes = 0
    for row in range(1, rows + 1):
        if row in FAILING_ROWS:
            email, error = FAILING_ROWS[row]
            yield RowFailed(row=row, email=email, error=error)
        else:
            successes += 1
            internal = successes <= INTERNAL_SUCCESSES
            email = f"persona{row}@{'uni.edu' if internal else 'gmail.com'}"
            yield RowSucceeded(row=row, email=email, internal=internal)
            yield EmailSent(row=row, email=email)
        if row % 5 == 0:
            yield ProgressReported(current=row, total=rows)
    yield Succeeded()


def run_worker(db_path: str, job_id: str, pause: float = 0.03) -> None:
    """Append the demo's events one at a time straight into the SQLite store."""
    log = SqliteLog(db_path)
    try:
        for event in demo_events():
            log.append(job_id, [NewEvent(new_event_id(), event)])
            time.sleep(pause)
    finally:
        log.close()


def poll_job(
    job_id: str,
    api_key: str,
    base_url: str,
    interval: float = 2,
    max_attempts: int = 300,
    out: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The seed page's polling loop, on the standard library; returns the final body."""
    headers = {"X-API-Key": api_key}
    for _ in range(max_attempts):
        url = f"{base_url}/jobs/{job_id}"
        request = urllib.request.Request(url, headers=headers)  # noqa: S310 (our own server)
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            data: dict[str, Any] = json.load(response)
        if data["status"] == "SUCCESS":
            return data
        if data["status"] == "FAILURE":
            raise RuntimeError(f"Job failed: {data['error']}")
        if data["status"] == "PROGRESS":
            progress = data.get("progress", {})
            out(f" Progress: {progress.get('current', 0)}/{progress.get('total', 0)}")
        time.sleep(interval)
    raise TimeoutError("Job did not complete in time")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_serving(server: subprocess.Popen[bytes], port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the server did not listen on port {port} within {timeout} s")


def _post_json(url: str, api_key: str, body: Any) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 (our own server)
        url,
        data=json.dumps(body).encode(),
        headers={"X-API-Key": api_key, "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        answer: dict[str, Any] = json.load(response)
        return answer


async def _demo_key(db_path: str) -> str:
    store = SqliteStore(db_path)
    await store.open()
    try:
        return (await issue_key(store, "demo")).secret
    finally:
        await store.close()


def run_demo(out: Callable[[str], None] = print, interval: float = 0.25) -> dict[str, Any]:
    """Run the whole demo in a temporary folder; return the final SUCCESS body."""
    with tempfile.TemporaryDirectory(prefix="jobtracker-demo-") as workdir:
        db_path = str(Path(workdir) / "demo.db")
        store_url = f"sqlite:///{db_path}"
        api_key = asyncio.run(_demo_key(db_path))
        port = _free_port()
        base_url = f"http://127.0.0.1:{port}/api/v1"
        out(f"store: {store_url}")
        with open(Path(workdir) / "server.log", "wb") as server_log:
            cmd = [sys.executable, "-m", "jobtracker", "serve", "--store", store_url]
            server = subprocess.Popen(  # noqa: S603
                [*cmd, "--port", str(port)], stdout=server_log, stderr=subprocess.STDOUT
            )
            try:
                _wait_until_serving(server, port)
                out(f"server: {base_url}")
                job = _post_json(f"{base_url}/jobs", api_key, {"total": ROWS, "label": "demo"})
                out(f"created job {job['job_id']}: {job['status']}")
                worker = subprocess.Popen(  # noqa: S603
                    [sys.executable, "-m", "jobtracker.demo", "worker", db_path, job["job_id"]]
                )
                final = poll_job(job["job_id"], api_key, base_url, interval=interval, out=out)
                if worker.wait(timeout=60) != 0:
                    raise RuntimeError(f"the demo worker exited with code {worker.returncode}")
            finally:
                server.terminate()
                server.wait(timeout=30)
    out(json.dumps(final, indent=2, ensure_ascii=False))
    return final


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    run_worker(sys.argv[2], sys.argv[3])
