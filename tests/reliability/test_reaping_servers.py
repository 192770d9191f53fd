"""Several servers on one store reap each lost job exactly once.

Two `jobtracker serve` processes share one SQLite file, then one PostgreSQL database; both run
their reaper every half second, so they race for every expired job. Each job must end with one
server-written `failed` event: the event id is derived from the job and the reason, so the second
server's attempt is a re-send the log records once.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.pg_database import drop_schema, new_schema_url, run_database
from tests.reliability.test_crash import ROOT, _free_port, _wait_for_port

JOBS = 20


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """One store shared by both servers."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    url = new_schema_url(run_database())
    yield url
    drop_schema(url)


def _call(method: str, url: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method=method, headers={"X-API-Key": key})
    with urllib.request.urlopen(request, timeout=30) as answer:
        raw = answer.read()
        return answer.status, orjson.loads(raw) if raw else None


def test_two_servers_end_each_lost_job_once(store_url: str, tmp_path: Path) -> None:
    """20 started jobs left alone: each ends FAILURE `worker_lost` with exactly one `failed`."""
    created = subprocess.run(
        [sys.executable, "-m", "jobtracker", "keys", "create", "--name", "o", "--store", store_url],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    key = created.stdout.strip().splitlines()[-1]
    ports = [_free_port(), _free_port()]
    servers = []
    for port in ports:
        with (tmp_path / f"serve-{port}.log").open("wb") as log:
            servers.append(subprocess.Popen(
                [sys.executable, "-m", "jobtracker", "serve", "--store", store_url,
                 "--port", str(port)],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            ))
    try:
        for port in ports:
            _wait_for_port(port)
        first, second = (f"http://127.0.0.1:{port}/api/v1/jobs" for port in ports)
        jobs = [f"lost-{n}" for n in range(JOBS)]
        for job_id in jobs:
            _call("POST", first, key, {"job_id": job_id, "heartbeat_timeout": 5})
            _call("POST", f"{second}/{job_id}/events", key, [{"type": "started"}])
        deadline = time.monotonic() + 30
        for job_id in jobs:
            while _call("GET", f"{second}/{job_id}", key)[1]["status"] != "FAILURE":
                assert time.monotonic() < deadline, f"{job_id} was not reaped"
                time.sleep(0.2)
        endings = []
        for job_id in jobs:
            events = _call("GET", f"{first}/{job_id}/events", key)[1]["events"]
            endings.append([e for e in events if e["type"] == "failed"])
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
    assert all(len(ending) == 1 for ending in endings), endings
    assert {ending[0]["reason"] for ending in endings} == {"worker_lost"}
    logs = "".join(p.read_text() for p in tmp_path.glob("serve-*.log"))
    assert logs.count("ended job lost-") == JOBS, "each job was ended by exactly one server"
