"""A SQLite server alone on its file keeps serving while other processes open that file.

The README tells users to run `jobtracker keys create` while the server runs, and the SDK can
write straight into the file. Each of those opens the database from another process; none may
take the server down (it once died of SIGBUS: closing a descriptor of its own on the `-shm` file
dropped SQLite's lock on it, so the next process to open the database rebuilt the file under the
server's mapping). The test process itself never opens the file while the server runs: a
connection of its own would hold the lock and hide the fault.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from jobtracker.domain.stored import unpack_event_id
from tests.reliability.test_crash import ROOT, _free_port, _wait_for_port

#: Seconds of append load while other processes open the file.
SECONDS = 6.0
CLIENTS = 8


def _cli(store: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobtracker", *args, "--store", store],
        capture_output=True, text=True, check=True, cwd=ROOT, timeout=60,
    )


def _reader(db: Path) -> list[str]:
    """A plain sqlite3 reader in a process of its own."""
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "print(c.execute('SELECT count(*) FROM log').fetchone()[0])"
    )
    return [sys.executable, "-c", code, str(db)]


def _sdk_writer(store: str, key: str, job_id: str) -> list[str]:
    """The SDK writing a 500-row job straight into the file, in a process of its own."""
    code = (
        "import sys, jobtracker\n"
        "with jobtracker.connect(sys.argv[1], api_key=sys.argv[2]) as tracker:\n"
        "    job_id = tracker.create_job(job_id=sys.argv[3], total=500)\n"
        "    with tracker.job(job_id) as job:\n"
        "        job.started()\n"
        "        for row in range(500):\n"
        "            job.row_succeeded(row, f'p{row}@uni.edu', internal=True)\n"
        "        job.succeeded()\n"
    )
    return [sys.executable, "-c", code, store, key, job_id]


def _open_the_file_repeatedly(store: str, db: Path, owner: str, until: float) -> list[str]:
    """Every kind of other process that opens the file, in turn, until `until`; what each did."""
    done: list[str] = []
    n = 0
    while time.monotonic() < until:
        kind = n % 4
        if kind == 0:
            _cli(store, "keys", "list")
            done.append("keys list")
        elif kind == 1:
            _cli(store, "keys", "create", "--name", f"opener-{n}")
            done.append("keys create")
        elif kind == 2:
            subprocess.run(_reader(db), check=True, capture_output=True, timeout=60)
            done.append("sqlite3 reader")
        else:
            subprocess.run(_sdk_writer(store, owner, f"direct-{n}"), check=True,
                           capture_output=True, timeout=120)
            done.append("SDK writing into the file")
        n += 1
    return done


async def _append_load(base: str, key: str, until: float) -> tuple[set[str], list[str]]:
    """`CLIENTS` clients appending rows over HTTP; the acknowledged event ids, and failures."""
    acked: set[str] = set()
    failures: list[str] = []
    headers = {"X-API-Key": key}

    async def client(n: int, session: aiohttp.ClientSession) -> None:
        job_id = f"http-{n}"
        async with session.post(f"{base}/api/v1/jobs", json={"job_id": job_id}) as created:
            assert created.status == 201, await created.text()
        row = 0
        while time.monotonic() < until:
            batch = [
                {"type": "row_succeeded", "event_id": f"{job_id}-{r}", "row": r,
                 "email": f"p{r}@uni.edu", "internal": True}
                for r in range(row, row + 20)
            ]
            try:
                async with session.post(
                    f"{base}/api/v1/jobs/{job_id}/events", data=orjson.dumps(batch)
                ) as answer:
                    if answer.status == 200:
                        acked.update(event["event_id"] for event in batch)
                    else:
                        failures.append(f"{answer.status} {await answer.text()}")
            except aiohttp.ClientError as exc:
                failures.append(repr(exc))
                return  # the server went away: no point hammering a closed port
            row += 20

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(client(n, session) for n in range(CLIENTS)))
    return acked, failures


@pytest.mark.parametrize("workers", [1, 2])
def test_server_alone_on_its_file_survives_other_processes_opening_it(
    tmp_path: Path, workers: int
) -> None:
    """`keys list`, `keys create`, a sqlite3 reader and an SDK writer, each in a process of its
    own, open the file while the server appends: it stays up and every acknowledged row is kept."""
    db = tmp_path / "shared.db"
    store = f"sqlite:///{db}"
    owner = _cli(store, "keys", "create", "--name", "owner").stdout.strip().splitlines()[-1]
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jobtracker", "serve", "--store", store, "--port", str(port),
         "--workers", str(workers)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_port(port)
        until = time.monotonic() + SECONDS
        opened: list[str] = []
        opener = threading.Thread(
            target=lambda: opened.extend(_open_the_file_repeatedly(store, db, owner, until))
        )
        opener.start()
        acked, failures = asyncio.run(_append_load(f"http://127.0.0.1:{port}", owner, until))
        opener.join(timeout=180)
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    output = (tmp_path / "server.log").read_text(errors="replace")
    assert alive, f"the server died (exit {server.returncode}):\n{output[-2000:]}"
    assert failures == [], (failures[:5], output[-2000:])
    assert {"keys list", "keys create", "sqlite3 reader", "SDK writing into the file"} <= set(
        opened
    )
    with sqlite3.connect(db) as conn:
        stored = {unpack_event_id(row[0]) for row in conn.execute("SELECT event_id FROM log")}
    assert acked, "no append was acknowledged"
    assert acked <= stored
    print(f"\nshared file, {workers} worker(s): {len(acked)} rows acknowledged over HTTP, all "
          f"kept, while other processes opened the file {len(opened)} times")
