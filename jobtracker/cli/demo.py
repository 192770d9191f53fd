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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobtracker.cli.demo_worker import demo_recipients, write_recipients
from jobtracker.store.keys import issue_key
from jobtracker.store.sqlite import SqliteStore

ROWS = 50
#: Seconds of simulated work per row: slow enough for the poller to watch the job progress.
ROW_PAUSE = 0.03


def worker_command(base_url: str, api_key: str, job_id: str, recipients: str) -> list[str]:
    """The SDK-based demo worker, reporting over HTTP; e-mails never fail in the demo."""
    return [
        sys.executable, "-m", "jobtracker.cli.demo_worker",
        "--url", base_url, "--api-key", api_key, "--job-id", job_id,
        "--recipients", recipients, "--email-failure-rate", "0", "--pause", str(ROW_PAUSE),
    ]


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


async def _demo_keys(db_path: str) -> tuple[str, str]:
    """The user's key (owns the job) and the worker's (may report on that user's jobs)."""
    store = SqliteStore(db_path)
    await store.open()
    try:
        owner = await issue_key(store, "demo")
        worker = await issue_key(
            store, "demo worker", scope="worker", owners=[owner.record.key_id]
        )
        return owner.secret, worker.secret
    finally:
        await store.close()


def run_demo(out: Callable[[str], None] = print, interval: float = 0.25) -> dict[str, Any]:
    """Run the whole demo in a temporary folder; return the final SUCCESS body."""
    with tempfile.TemporaryDirectory(prefix="jobtracker-demo-") as workdir:
        db_path = str(Path(workdir) / "demo.db")
        store_url = f"sqlite:///{db_path}"
        api_key, worker_key = asyncio.run(_demo_keys(db_path))
        recipients = str(Path(workdir) / "recipients.csv")
        write_recipients(recipients, demo_recipients())
        port = _free_port()
        server_url = f"http://127.0.0.1:{port}"
        base_url = f"{server_url}/api/v1"
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
                    worker_command(server_url, worker_key, job["job_id"], recipients),
                    stdout=subprocess.DEVNULL,
                )
                final = poll_job(job["job_id"], api_key, base_url, interval=interval, out=out)
                if worker.wait(timeout=60) != 0:
                    raise RuntimeError(f"the demo worker exited with code {worker.returncode}")
            finally:
                server.terminate()
                server.wait(timeout=30)
    out(json.dumps(final, indent=2, ensure_ascii=False))
    return final
