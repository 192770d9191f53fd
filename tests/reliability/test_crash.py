"""kill -9 at random moments: nothing acknowledged is lost, no batch is half written.

Each writer is killed `JOBTRACKER_CHAOS_KILLS` times (CI: 12); the full form of the reliability
issue is `JOBTRACKER_CHAOS_KILLS=50` (see RELIABILITY.md). Every case runs on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import orjson
import pytest

from jobtracker.domain.events import Created
from jobtracker.store import make_store
from jobtracker.store.keys import issue_key
from tests.conditions import wait_until
from tests.pg_database import drop_schema, new_schema_url, run_database
from tests.reliability.chaos import WriterLedger, check_after_kill

KILLS = int(os.environ.get("JOBTRACKER_CHAOS_KILLS", "12"))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store of each kind, shared by the processes of one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    url = new_schema_url(run_database())
    yield url
    drop_schema(url)


def prepare(store_url: str) -> str:
    """Migrate, make an owner key and the job 'chaos'; return the key."""

    async def run() -> str:
        store = make_store(store_url)
        await store.open()
        try:
            issued = await issue_key(store, "chaos")
            await store.create_job("chaos", Created(owner=issued.record.key_id))
            return issued.secret
        finally:
            await store.close()

    return asyncio.run(run())


def test_sdk_writing_into_the_store_survives_kill_9(store_url: str) -> None:
    """An SDK process killed mid-flush loses no acknowledged row and leaves no partial batch."""
    prepare(store_url)
    rng = random.Random(7)
    total_acked = 0
    for kill in range(KILLS):
        writer = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.sdk_writer", store_url, "chaos",
             str(kill * 1_000_000), str(kill)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )
        # Kill once the writer has begun its first batch (starting Python and connecting can take
        # a while on a slow machine), then at a random moment of the batches that follow.
        assert writer.stdout is not None
        first = writer.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.6))  # the moment of the kill: chosen at random on purpose
        writer.send_signal(signal.SIGKILL)
        out, _ = writer.communicate(timeout=30)
        ledger = WriterLedger()
        ledger.read(first + out)
        assert ledger.begun, "the writer never got going"
        check_after_kill(store_url, "chaos", ledger)
        total_acked += sum(count for _, count in ledger.acked)
    assert total_acked > 0
    print(f"\nSDK into {store_url.split(':')[0]}: {KILLS} kills, {total_acked} acked rows kept")


def _post(url: str, key: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return int(response.status)


def _ingest_until_refused(
    url: str, key: str, first_row: int, ledger: WriterLedger, wrong: list[str]
) -> None:
    """Post batches of rows until the server dies; record what was begun and acknowledged, and
    in `wrong` any answer other than 200 (every batch is valid: the server must take it)."""
    row, rng = first_row, random.Random(first_row)
    while True:
        count = rng.randint(1, 40)
        batch = [
            {"type": "row_succeeded", "event_id": f"r{n}", "row": n, "email": "a@b.c",
             "internal": True}
            for n in range(row, row + count)
        ]
        ledger.begun.append((row, count))
        try:
            status = _post(url, key, orjson.dumps(batch))
        except urllib.error.HTTPError as exc:  # an answer, not a lost connection: before OSError
            wrong.append(f"{exc.code} {exc.read()[:200]!r} for the batch at row {row}")
            return
        except (OSError, http.client.HTTPException):
            return  # the server is gone: the connection was refused, reset or cut mid-answer
        if status != 200:
            wrong.append(f"{status} for the batch at row {row}")
            return
        ledger.acked.append((row, count))
        row += count


def test_server_killed_during_ingest_loses_nothing_acknowledged(store_url: str) -> None:
    """kill -9 the server while four clients post batches: every 200 is in the log, whole."""
    key = prepare(store_url)
    rng = random.Random(11)
    acked = 0
    for kill in range(KILLS):
        port = _free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "jobtracker", "serve", "--store", store_url,
             "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        _wait_for_port(port)
        url = f"http://127.0.0.1:{port}/api/v1/jobs/chaos/events"
        ledgers = [WriterLedger() for _ in range(4)]
        wrong: list[str] = []
        clients = [
            threading.Thread(
                target=_ingest_until_refused,
                args=(url, key, (kill * 4 + n) * 1_000_000, ledgers[n], wrong),
            )
            for n in range(4)
        ]
        for client in clients:
            client.start()
        # Kill once something was acknowledged (a slow machine may need a while for the first
        # 200), then at a random moment of the stream of batches that follows.
        wait_until(partial(_answered, ledgers, wrong), "no batch was answered", within=30)
        time.sleep(rng.uniform(0.0, 0.6))  # the moment of the kill: chosen at random on purpose
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        for client in clients:
            client.join(timeout=30)
        assert not wrong, f"the live server refused valid batches: {wrong}"
        merged = WriterLedger(
            begun=[b for ledger in ledgers for b in ledger.begun],
            acked=[a for ledger in ledgers for a in ledger.acked],
        )
        assert merged.acked, "no batch was acknowledged before the kill"
        check_after_kill(store_url, "chaos", merged)
        acked += sum(count for _, count in merged.acked)
    print(f"\nserver on {store_url.split(':')[0]}: {KILLS} kills, {acked} acked rows kept")


def _answered(ledgers: list[WriterLedger], wrong: list[str]) -> bool:
    """Whether a client has had an answer: a batch acknowledged, or refused."""
    return any(ledger.acked for ledger in ledgers) or bool(wrong)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"server did not listen on {port}")
