"""`tracker.get(job_id)`: the job's body now, the same dict over HTTP and from a store."""

from __future__ import annotations

import httpx
import pytest

import jobtracker
from jobtracker.sdk.worker import Tracker
from tests.sdk.conftest import LiveServer


def _report_some(tracker: Tracker, job_id: str) -> None:
    with tracker.job(job_id) as job:
        job.started()
        job.row_succeeded(1, "ana@uni.edu", internal=True)
        job.row_failed(2, "x@test", "Invalid email: x@test")


def _served_body(server: LiveServer, job_id: str) -> object:
    answer = httpx.get(f"{server.base_url}/api/v1/jobs/{job_id}",
                       headers={"X-API-Key": server.owner_key})
    assert answer.status_code == 200
    return answer.json()


@pytest.mark.parametrize("via", ["http", "store"])
def test_get_returns_the_body_the_api_answers(live_server: LiveServer, via: str) -> None:
    """A running job and then a finished one: `get` gives exactly the GET body, over HTTP and
    straight from the SQLite file."""
    url = live_server.base_url if via == "http" else live_server.store_url
    with jobtracker.connect(url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job(total=2)
        assert tracker.get(job_id) == {"job_id": job_id, "status": "PENDING"}
        _report_some(tracker, job_id)
        assert tracker.get(job_id) == _served_body(live_server, job_id)
        assert tracker.get(job_id)["status"] == "PROGRESS"
        with tracker.job(job_id) as job:
            job.succeeded()
        final = tracker.get(job_id)
    assert final == _served_body(live_server, job_id)
    assert final["result"]["failed"] == 1


@pytest.mark.parametrize("via", ["http", "store"])
async def test_async_get_returns_the_body_the_api_answers(
    live_server: LiveServer, via: str
) -> None:
    """The asyncio twin: `await tracker.get(job_id)` is the GET body too."""
    url = live_server.base_url if via == "http" else live_server.store_url
    async with jobtracker.connect_async(url, api_key=live_server.owner_key) as tracker:
        job_id = await tracker.create_job(total=1)
        async with tracker.job(job_id) as job:
            job.started()
            job.row_succeeded(1, "ana@uni.edu", internal=True)
            job.succeeded()
        body = await tracker.get(job_id)
    assert body == _served_body(live_server, job_id)
    assert body["status"] == "SUCCESS"


@pytest.mark.parametrize("via", ["http", "store"])
def test_get_of_an_unknown_job_raises_job_not_found(live_server: LiveServer, via: str) -> None:
    """An id nobody created is `jobtracker.JobNotFound`, never a PENDING body."""
    url = live_server.base_url if via == "http" else live_server.store_url
    with jobtracker.connect(url, api_key=live_server.owner_key) as tracker, \
            pytest.raises(jobtracker.JobNotFound):
        tracker.get("nobody-made-this")


def test_get_of_another_owners_job_raises_access_denied(live_server: LiveServer) -> None:
    """Over HTTP a key reads only its own jobs: a worker key's `get` is `AccessDenied`."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as owner:
        job_id = owner.create_job()
    with jobtracker.connect(live_server.base_url, api_key=live_server.worker_key) as worker, \
            pytest.raises(jobtracker.AccessDenied):
        worker.get(job_id)


def test_connecting_without_a_key_says_what_to_pass(live_server: LiveServer) -> None:
    """No key for a server is refused at `connect`; straight into a store, creating a job is
    refused (reporting and reading need no key there); each error names `api_key=`."""
    with pytest.raises(jobtracker.JobtrackerError, match=r"api_key=KEY.*keys create"):
        jobtracker.connect(live_server.base_url)
    with jobtracker.connect(live_server.store_url) as tracker, \
            pytest.raises(jobtracker.NotAuthenticated, match=r"api_key=KEY.*keys create"):
        tracker.create_job()
