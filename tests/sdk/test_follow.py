"""`tracker.watch` and `tracker.wait`: follow a job without hammering the server."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

import jobtracker
from jobtracker.domain.errors import JobNotFound
from tests.sdk.conftest import LiveServer


def report_slowly(url: str, key: str, job_id: str, rows: int = 3, pause: float = 0.2) -> None:
    """A worker in a thread: a few rows, then success."""
    time.sleep(pause)
    with jobtracker.connect(url, api_key=key, max_delay=0) as tracker, tracker.job(job_id) as job:
        job.started()
        for row in range(1, rows + 1):
            job.row_succeeded(row, f"p{row}@uni.edu", internal=True)
            job.flush()
            time.sleep(pause)
        job.succeeded()


def counting_gets(seen: list[str]) -> Callable[..., Any]:
    @web.middleware
    async def count(request: web.Request, handler: Any) -> Any:
        if request.method == "GET":
            seen.append(request.path_qs)
        return await handler(request)

    return count


def test_wait_returns_the_terminal_body_with_one_request_per_change(
    live_server_with: Callable[..., LiveServer],
) -> None:
    """Waiting on a job costs about one GET per change, not one every two seconds."""
    gets: list[str] = []
    server = live_server_with(counting_gets(gets))
    with jobtracker.connect(server.base_url, api_key=server.owner_key) as tracker:
        job_id = tracker.create_job(total=3)
        worker = threading.Thread(
            target=report_slowly, args=(server.base_url, server.worker_key, job_id)
        )
        worker.start()
        final = tracker.wait(job_id, timeout=20)
        worker.join()
    assert final["status"] == "SUCCESS"
    assert final["result"]["successful"] == 3
    # started, three rows and success are at most 5 changes; a 2 s poller would have asked less
    # often but seen less, a tight poller far more often.
    assert len(gets) <= 8, gets
    assert any("wait=" in path for path in gets)


def test_watch_yields_each_new_body_once_ending_with_the_terminal_one(
    live_server: LiveServer,
) -> None:
    """`watch` hands out every change, in order, never the same body twice."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job(total=3)
        worker = threading.Thread(
            target=report_slowly, args=(live_server.base_url, live_server.worker_key, job_id)
        )
        worker.start()
        bodies = list(tracker.watch(job_id, timeout=20))
        worker.join()
    assert bodies[0]["status"] in ("PENDING", "STARTED", "PROGRESS")
    assert bodies[-1]["status"] == "SUCCESS"
    assert all(a != b for a, b in itertools.pairwise(bodies))


def test_wait_gives_up_after_its_timeout(live_server: LiveServer) -> None:
    """A job that never finishes raises TimeoutError once the timeout is spent."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            tracker.wait(job_id, timeout=1.5)
    assert 1.0 < time.monotonic() - started < 5


def test_wait_on_an_unknown_job_raises_job_not_found(live_server: LiveServer) -> None:
    """A typo in the id is an error at once, never an endless PENDING."""
    url, key = live_server.base_url, live_server.owner_key
    with jobtracker.connect(url, api_key=key) as tracker, pytest.raises(JobNotFound):
        tracker.wait("no-such-job", timeout=5)


def old_server() -> Callable[..., Any]:
    """A server that neither holds requests nor sends ETags, and asks for 1 s between polls."""

    @web.middleware
    async def old(request: web.Request, handler: Any) -> Any:
        if request.method != "GET":
            return await handler(request)
        headers = {k: v for k, v in request.headers.items() if k != "If-None-Match"}
        plain = request.clone(headers=headers, rel_url=request.rel_url.with_query({}))
        response = await handler(plain)
        response.headers.pop("ETag", None)
        response.headers["Retry-After"] = "1"
        return response

    return old


def test_a_server_without_long_poll_is_polled_at_its_retry_after(
    live_server_with: Callable[..., LiveServer],
) -> None:
    """Against a server that cannot hold requests the SDK polls, no faster than Retry-After."""
    gets: list[str] = []
    server = live_server_with(old_server(), counting_gets(gets))
    with jobtracker.connect(server.base_url, api_key=server.owner_key) as tracker:
        job_id = tracker.create_job(total=3)
        worker = threading.Thread(
            target=report_slowly, args=(server.base_url, server.worker_key, job_id, 3, 0.7)
        )
        started = time.monotonic()
        worker.start()
        final = tracker.wait(job_id, timeout=20)
        worker.join()
        took = time.monotonic() - started
    assert final["status"] == "SUCCESS"
    assert len(gets) <= took / 1 + 2


async def test_async_watch_over_http_and_straight_from_the_store(
    live_server: LiveServer,
) -> None:
    """The asyncio SDK follows a job both through the server and from the SQLite file."""
    async with jobtracker.connect_async(
        live_server.base_url, api_key=live_server.owner_key
    ) as tracker:
        job_id = await tracker.create_job(total=3)
        worker = asyncio.create_task(asyncio.to_thread(
            report_slowly, live_server.base_url, live_server.worker_key, job_id
        ))
        async with jobtracker.connect_async(live_server.store_url) as direct:
            over_http, from_store = await asyncio.gather(
                tracker.wait(job_id, timeout=20), direct.wait(job_id, timeout=20)
            )
        await worker
    assert over_http == from_store
    assert over_http["status"] == "SUCCESS"


def test_sync_wait_straight_from_the_sqlite_file(live_server: LiveServer) -> None:
    """A script next to the database can wait on a job without any server."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job(total=3)
    worker = threading.Thread(
        target=report_slowly, args=(live_server.store_url, None, job_id)
    )
    worker.start()
    with jobtracker.connect(live_server.store_url) as direct:
        final = direct.wait(job_id, timeout=20)
    worker.join()
    assert final["result"]["successful"] == 3
