"""`jobtracker serve --workers N`: several processes on one port, stopped together."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

WORKER_LINE = re.compile(r"worker (\d+): ======== Running on")


def jobtracker(*args: str) -> list[str]:
    return [sys.executable, "-m", "jobtracker", *args]


def wait_for_workers(server: subprocess.Popen[bytes], log: Path, count: int) -> list[int]:
    """The pids of the workers, once `count` of them listen."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pids = [int(pid) for pid in WORKER_LINE.findall(log.read_text())]
        if len(pids) >= count:
            return pids
        assert server.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{count} workers did not start:\n{log.read_text()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_is_free(port: int) -> bool:
    """Whether a server could listen on `port` (old connections may linger, listeners not)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def owner_secret(tmp_path: Path) -> tuple[str, str]:
    """A store URL with one owner key: (store URL, the key's secret)."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    created = subprocess.run(jobtracker("keys", "create", "--name", "ci", "--store", store),
                             capture_output=True, text=True, check=True)
    return store, created.stdout.strip().splitlines()[-1]


def post_job(base: str, secret: str, job_id: str) -> int:
    request = urllib.request.Request(
        f"{base}/api/v1/jobs", data=f'{{"job_id": "{job_id}"}}'.encode(), method="POST",
        headers={"X-API-Key": secret, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        status: int = answer.status
        return status


def get_status(base: str, secret: str, job_id: str) -> str:
    request = urllib.request.Request(f"{base}/api/v1/jobs/{job_id}",
                                     headers={"X-API-Key": secret})
    with urllib.request.urlopen(request, timeout=10) as answer:
        body: bytes = answer.read()
        return body.decode()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_two_workers_serve_one_port_and_stop_together(
    owner_secret: tuple[str, str], tmp_path: Path, stop: signal.Signals
) -> None:
    """With --workers 2, two processes answer on one port; SIGTERM or SIGINT stops both."""
    store, secret = owner_secret
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            jobtracker("serve", "--store", store, "--port", str(port), "--workers", "2"),
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        pids = wait_for_workers(server, log, 2)
        assert len(set(pids)) == 2
        base = f"http://127.0.0.1:{port}"
        # A fresh connection per request: the kernel spreads them over both workers.
        for n in range(20):
            assert post_job(base, secret, f"job-{n}") == 201
        for n in range(20):
            assert '"status":"PENDING"' in get_status(base, secret, f"job-{n}")
        server.send_signal(stop)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert not any(is_running(pid) for pid in pids)
    assert port_is_free(port)


def test_a_worker_that_dies_takes_the_others_down_with_a_failing_exit_code(
    owner_secret: tuple[str, str], tmp_path: Path
) -> None:
    """If one worker is killed, the server does not limp on: all stop and the exit code is 1."""
    store, _ = owner_secret
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            jobtracker("serve", "--store", store, "--port", str(port), "--workers", "2"),
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        first, second = wait_for_workers(server, log, 2)
        os.kill(first, signal.SIGKILL)
        assert server.wait(timeout=30) == 1
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert not is_running(second)


def test_workers_refuse_a_memory_store() -> None:
    """memory:// cannot be shared by processes, so --workers 2 refuses it and says why."""
    done = subprocess.run(
        jobtracker("serve", "--store", "memory://", "--workers", "2", "--port", "1"),
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert "memory:// lives in one process" in done.stderr
