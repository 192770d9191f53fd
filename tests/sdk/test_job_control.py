"""The SDK and job control: it heartbeats for a busy worker, dies visibly, and hears a cancel.

Against a live server (its reaper running), over HTTP and straight into the server's SQLite file.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import orjson
import pytest

import jobtracker
from jobtracker.domain.control import ending_event_id
from tests.sdk.conftest import LiveServer


def _url(live: LiveServer, via: str) -> str:
    return live.base_url if via == "http" else live.store_url


def _get(live: LiveServer, path: str) -> Any:
    request = urllib.request.Request(f"{live.base_url}/api/v1/jobs/{path}",
                                     headers={"X-API-Key": live.owner_key})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return orjson.loads(answer.read())


def _last_event(live: LiveServer, job_id: str) -> Any:
    """The newest event of the job's history, paging through it."""
    after, last = 0, None
    while after is not None:
        page = _get(live, f"{job_id}/events?after_version={after}")
        last = page["events"][-1] if page["events"] else last
        after = page["next_after_version"]
    return last


def _wait_finished(live: LiveServer, job_id: str, within: float) -> dict[str, Any]:
    with jobtracker.connect(live.base_url, api_key=live.owner_key) as tracker:
        return tracker.wait(job_id, timeout=within)


@pytest.mark.parametrize("via", ["http", "store"])
def test_a_worker_busy_on_a_slow_row_is_kept_alive_by_heartbeats(
    live_server: LiveServer, via: str
) -> None:
    """Eight seconds on one row with a 5 s heartbeat timeout: the job still succeeds."""
    with jobtracker.connect(_url(live_server, via), api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job(total=1, heartbeat_timeout=5)
        with tracker.job(job_id) as job:
            job.started()
            job.flush()
            time.sleep(8)  # the worker's slow row: nothing is reported meanwhile
            job.row_succeeded(1, "ana@uni.edu", internal=True)
            job.succeeded()
    assert _get(live_server, job_id)["status"] == "SUCCESS"


WORKER = """
import sys, jobtracker
with jobtracker.connect(sys.argv[1], api_key=sys.argv[2]) as tracker:
    job_id = tracker.create_job(heartbeat_timeout=5)
    with tracker.job(job_id) as job:
        job.started()
        job.flush()
        print(job_id, flush=True)
        sys.stdin.read()  # busy until killed
"""


def test_a_worker_killed_inside_its_job_block_is_reaped(live_server: LiveServer) -> None:
    """SIGKILL stops its heartbeats: the job ends FAILURE `Worker lost` soon after 5 s."""
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, live_server.base_url, live_server.owner_key],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert worker.stdout is not None
    job_id = worker.stdout.readline().strip()
    killed = time.monotonic()
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    assert worker.stdin is not None
    worker.stdin.close()
    worker.stdout.close()
    body = _wait_finished(live_server, job_id, within=20)
    assert body == {"job_id": job_id, "status": "FAILURE",
                    "error": "Worker lost: no report for 5 s"}
    assert time.monotonic() - killed < 5 + 1 + 2


@pytest.mark.parametrize("via", ["http", "store"])
def test_a_cancelled_worker_hears_it_and_its_block_records_cancelled(
    live_server: LiveServer, via: str
) -> None:
    """The owner cancels; the worker's next report raises `jobtracker.Cancelled`; leaving the
    block with it ends the job FAILURE `Cancelled`, written by the worker, not the reaper."""
    heard: list[BaseException] = []
    reporting = threading.Event()

    def work() -> None:
        with jobtracker.connect(_url(live_server, via), api_key=live_server.owner_key) as tracker:
            try:
                with tracker.job(job_id) as job:
                    job.started()
                    for row in range(1, 100_000):
                        job.row_succeeded(row, f"p{row}@uni.edu", internal=False)
                        job.flush()
                        reporting.set()
            except jobtracker.Cancelled as exc:
                heard.append(exc)

    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as owner:
        job_id = owner.create_job()
    worker = threading.Thread(target=work)
    worker.start()
    assert reporting.wait(30)
    request = urllib.request.Request(f"{live_server.base_url}/api/v1/jobs/{job_id}/cancel",
                                     method="POST", headers={"X-API-Key": live_server.owner_key})
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 202
    worker.join(timeout=60)
    assert len(heard) == 1
    body = _wait_finished(live_server, job_id, within=10)
    assert body == {"job_id": job_id, "status": "FAILURE", "error": "Cancelled"}
    ending = _last_event(live_server, job_id)
    assert (ending["type"], ending["reason"]) == ("failed", "cancelled")
    assert ending["event_id"] != ending_event_id(job_id, "cancelled")
