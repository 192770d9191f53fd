"""A real `jobtracker serve` process for end-to-end tests: started, waited for, always stopped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from jobtracker.domain.events import Created
from jobtracker.store import make_store
from jobtracker.store.keys import issue_key
from tests.conditions import PATIENCE, wait_until


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def jobtracker(*args: str) -> list[str]:
    """The command line that runs `jobtracker` with this interpreter."""
    return [sys.executable, "-m", "jobtracker", *args]


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    """Status, body and headers of a GET (an error status is an answer, not an exception)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def answers(url: str) -> bool:
    """Whether something answers HTTP at `url`."""
    try:
        http_get(url)
    except OSError:
        return False
    return True


def seed(store_url: str, *job_ids: str) -> str:
    """Migrate the store, make an owner key and these jobs; return the key."""

    async def run() -> str:
        store = make_store(store_url)
        await store.open()
        try:
            issued = await issue_key(store, "e2e")
            for job_id in job_ids:
                await store.create_job(job_id, Created(owner=issued.record.key_id))
            return issued.secret
        finally:
            await store.close()

    return asyncio.run(run())


@contextlib.contextmanager
def serving(
    store_url: str, log: Path, *flags: str, port: int | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`jobtracker serve` with `flags`, its output in `log`; yields it and its base URL once it
    answers `/healthz`. Killed at the end if it is still running."""
    port = port or free_port()
    with open(log, "wb") as out:
        server = subprocess.Popen(
            jobtracker("serve", "--store", store_url, "--port", str(port), *flags),
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.poll() is not None or answers(f"{base}/healthz"),
                   f"the server on {port} to answer")
        assert server.poll() is None, log.read_text()
        yield server, base
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def stop(server: subprocess.Popen[bytes], within: float = PATIENCE) -> tuple[int, float]:
    """SIGTERM the server; its exit code and how many seconds it took to exit."""
    asked = time.monotonic()
    server.terminate()
    code = server.wait(timeout=within)
    return code, time.monotonic() - asked
