"""A PostgreSQL crash-restart in the middle of a load: the server and the SDK recover by
themselves and nothing acknowledged is lost. Runs on a private cluster (initdb/pg_ctl as the
`postgres` OS user), never on the shared server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from tests.pg_cluster import PrivateCluster
from tests.reliability.chaos import WriterLedger, check_after_kill
from tests.reliability.test_crash import ROOT, _free_port, _wait_for_port, prepare


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A private cluster, started; destroyed after the test."""
    private = PrivateCluster()
    private.start()
    yield private
    private.destroy()


def count_rows(url: str) -> int:
    """Events in the log right now."""

    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM events"))
        finally:
            await conn.close()

    return asyncio.run(count())


def writer(url: str, first_row: int, key: str | None = None) -> subprocess.Popen[str]:
    args = [url, "chaos", str(first_row), str(first_row), *([key] if key else [])]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.sdk_writer", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )


def test_postgres_restart_mid_load_loses_nothing_acknowledged(cluster: PrivateCluster) -> None:
    """Crash PostgreSQL (immediate stop) under load and bring it back: writers carry on."""
    key = prepare(cluster.url)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jobtracker", "serve", "--store", cluster.url, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        writers = [writer(base, 1_000_000, key), writer(cluster.url, 2_000_000)]
        time.sleep(1.5)
        cluster.stop("immediate")  # a crash: no checkpoint, recovery at the next start
        crashed_at = time.monotonic()
        time.sleep(1.0)
        cluster.start()
        rows_at_restart = count_rows(cluster.url)
        time.sleep(3.0)
        survivors = [process.poll() is None for process in writers]
        rows_at_end = count_rows(cluster.url)
        for process in writers:
            process.send_signal(signal.SIGKILL)
        ledgers = []
        for process in writers:
            ledger = WriterLedger()
            ledger.read(process.communicate(timeout=30)[0])
            ledgers.append(ledger)
        answer = httpx.get(f"{base}/api/v1/jobs/chaos", headers={"X-API-Key": key}, timeout=10)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert answer.status_code == 200, "the server did not recover from the restart"
    assert all(survivors), "a writer gave up during the outage"
    assert rows_at_end > rows_at_restart, "nothing was written after the restart"
    for ledger in ledgers:
        assert ledger.acked, "a writer acknowledged nothing"
    merged = WriterLedger(
        begun=[b for ledger in ledgers for b in ledger.begun],
        acked=[a for ledger in ledgers for a in ledger.acked],
    )
    rows = check_after_kill(cluster.url, "chaos", merged)
    after_restart = [len(ledger.acked) for ledger in ledgers]
    print(f"\nPostgreSQL restart {time.monotonic() - crashed_at:.1f} s before the end: "
          f"{rows} rows in the log ({rows_at_restart} events at the restart, {rows_at_end} "
          f"3 s later), acks per writer {after_restart}")
