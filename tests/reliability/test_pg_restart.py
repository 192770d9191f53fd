"""A PostgreSQL crash-restart in the middle of a load: the server and the SDK recover by
themselves and nothing acknowledged is lost. Runs on a private cluster (initdb/pg_ctl as the
`postgres` OS user), never on the shared server."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from tests.conditions import wait_until
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


class Writer:
    """An SDK writer process (over HTTP, or straight into PostgreSQL) and what it has said, each
    line stamped with when it was read."""

    def __init__(self, kind: str, url: str, first_row: int, key: str | None = None) -> None:
        self.kind = kind
        args = [url, "chaos", str(first_row), str(first_row), *([key] if key else [])]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.sdk_writer", *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line))

    def acked_since(self, moment: float) -> int:
        """Batches acknowledged after `moment`."""
        return sum(1 for at, line in list(self.lines) if at > moment and line.startswith("ack "))

    @property
    def held_up(self) -> bool:
        """Whether a batch is begun and not acknowledged (while the database is down: stuck)."""
        return bool(self.lines) and self.lines[-1][1].startswith("begin ")

    def stop(self) -> WriterLedger:
        """Kill the writer; what it began and acknowledged."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()
        ledger = WriterLedger()
        ledger.read("".join(line for _, line in self.lines))
        return ledger


def server_answers(base: str, key: str, status: int) -> bool:
    """Whether a GET of the job is answered with `status` right now."""
    try:
        answer = httpx.get(f"{base}/api/v1/jobs/chaos", headers={"X-API-Key": key}, timeout=10)
    except httpx.TransportError:
        return False
    return answer.status_code == status


def test_postgres_restart_mid_load_loses_nothing_acknowledged(cluster: PrivateCluster) -> None:
    """Crash PostgreSQL (immediate stop) under load and bring it back: both writers, the one over
    HTTP and the one straight into PostgreSQL, acknowledge batches again after the restart."""
    key = prepare(cluster.url)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jobtracker", "serve", "--store", cluster.url, "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    writers: list[Writer] = []
    try:
        _wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        writers = [Writer("over HTTP", base, 1_000_000, key),
                   Writer("straight into PostgreSQL", cluster.url, 2_000_000)]
        wait_until(lambda: all(w.acked_since(0) for w in writers), "a writer never got going",
                   within=60)
        cluster.stop("immediate")  # a crash: no checkpoint, recovery at the next start
        crashed_at = time.monotonic()
        # Down until the server has noticed (its reads fail with 503) and both writers are held
        # up by it (a batch begun, not acknowledged), then back.
        wait_until(lambda: server_answers(base, key, 503), "the server never saw the outage")
        wait_until(lambda: all(w.held_up for w in writers), "a writer never met the outage")
        cluster.start()
        restarted_at = time.monotonic()
        rows_at_restart = count_rows(cluster.url)
        wait_until(lambda: all(w.acked_since(restarted_at) >= 3 for w in writers),
                   lambda: "batches acknowledged after the restart: " + ", ".join(
                       f"{w.kind} {w.acked_since(restarted_at)}" for w in writers),
                   within=90)
        survivors = [w.process.poll() is None for w in writers]
        rows_at_end = count_rows(cluster.url)
        after_restart = {w.kind: w.acked_since(restarted_at) for w in writers}
        ledgers = [w.stop() for w in writers]
        assert server_answers(base, key, 200), "the server did not recover from the restart"
    finally:
        for w in writers:
            if w.process.poll() is None:
                w.process.kill()
        server.terminate()
        server.wait(timeout=30)
    assert all(survivors), "a writer gave up during the outage"
    assert rows_at_end > rows_at_restart, "nothing was written after the restart"
    merged = WriterLedger(
        begun=[b for ledger in ledgers for b in ledger.begun],
        acked=[a for ledger in ledgers for a in ledger.acked],
    )
    rows = check_after_kill(cluster.url, "chaos", merged)
    print(f"\nPostgreSQL restart {time.monotonic() - crashed_at:.1f} s before the end: "
          f"{rows} rows in the log ({rows_at_restart} events at the restart, {rows_at_end} "
          f"later), batches acknowledged after the restart {after_restart}")
