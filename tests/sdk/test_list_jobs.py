"""`tracker.list_jobs(...)`: the key's jobs, newest first, every page followed, the same items
over HTTP and straight from a store, sync and asyncio."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

import jobtracker
from jobtracker.domain.errors import InvalidInput, NotAuthenticated
from tests.sdk.conftest import LiveServer

URLS = ["http", "store"]


def _url(server: LiveServer, via: str) -> str:
    return server.base_url if via == "http" else server.store_url


@pytest.mark.parametrize("via", URLS)
def test_list_jobs_follows_every_page_newest_first(live_server: LiveServer, via: str) -> None:
    with jobtracker.connect(_url(live_server, via), api_key=live_server.owner_key) as tracker:
        made = [tracker.create_job(labels={"batch": "b1" if n % 2 else "b2"}) for n in range(7)]

        listed = list(tracker.list_jobs(page_size=2))

    assert [item["job_id"] for item in listed] == made[::-1]
    served = httpx.get(f"{live_server.base_url}/api/v1/jobs?limit=200",
                       headers={"X-API-Key": live_server.owner_key}).json()["jobs"]
    assert listed == served


@pytest.mark.parametrize("via", URLS)
def test_list_jobs_filters_by_status_labels_and_time(live_server: LiveServer, via: str) -> None:
    with jobtracker.connect(_url(live_server, via), api_key=live_server.owner_key) as tracker:
        done = tracker.create_job(labels={"achievement": "42"})
        with tracker.job(done) as job:
            job.succeeded()
        begun = dt.datetime.now(dt.UTC)
        waiting = tracker.create_job(labels={"achievement": "42", "kind": "csv"})
        other = tracker.create_job(labels={"achievement": "7"})

        def ids(**filters: object) -> list[str]:
            return [item["job_id"] for item in tracker.list_jobs(**filters)]  # type: ignore[arg-type]

        assert ids(status="SUCCESS") == [done]
        assert ids(status=["PENDING", "SUCCESS"], labels={"achievement": "42"}) == [waiting, done]
        assert ids(labels={"achievement": "42", "kind": "csv"}) == [waiting]
        assert ids(created_after=begun) == [other, waiting]
        assert ids(created_before=begun.isoformat()) == [done]
        with pytest.raises(InvalidInput, match=r"^status:"):
            ids(status="DONE")
        with pytest.raises(InvalidInput, match=r"^created_after:"):
            ids(created_after=dt.datetime(2026, 1, 1))  # naive: names no moment


def test_list_jobs_from_a_store_needs_the_key_whose_jobs_to_list(live_server: LiveServer) -> None:
    with jobtracker.connect(live_server.store_url) as tracker, pytest.raises(
        NotAuthenticated, match="api_key"
    ):
        list(tracker.list_jobs())


@pytest.mark.parametrize("via", URLS)
async def test_async_list_jobs_gives_the_same_items(live_server: LiveServer, via: str) -> None:
    url = _url(live_server, via)
    async with jobtracker.connect_async(url, api_key=live_server.owner_key) as tracker:
        made = [await tracker.create_job(labels={"n": str(n)}) for n in range(3)]
        listed = [item async for item in tracker.list_jobs(page_size=1)]
        only = [item["job_id"] async for item in tracker.list_jobs(labels={"n": "1"})]

    assert [item["job_id"] for item in listed] == made[::-1]
    assert only == [made[1]]


@pytest.mark.parametrize("via", URLS)
def test_labels_over_the_limits_are_refused_by_the_sdk(live_server: LiveServer, via: str) -> None:
    with jobtracker.connect(_url(live_server, via), api_key=live_server.owner_key) as tracker:
        with pytest.raises(InvalidInput, match=r"^labels"):
            tracker.create_job(labels={"Bad Key": "x"})
        assert list(tracker.list_jobs()) == []
