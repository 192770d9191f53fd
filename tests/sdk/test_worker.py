"""The worker SDK, sync and asyncio, over HTTP and straight into SQLite, against real servers."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

import jobtracker
from jobtracker.domain.errors import Conflict, InvalidInput, JobNotFound, NotAuthenticated
from jobtracker.domain.events import new_event_id, new_event_ids
from jobtracker.domain.projection import job_body
from jobtracker.sdk.aio import AsyncJob
from jobtracker.sdk.direct import BlockingStoreTransport
from jobtracker.sdk.worker import Job, Options, RetryPolicy, Tracker
from jobtracker.store.sqlite.log import SqliteLog
from tests.sdk.conftest import LiveServer

Handler = Callable[[web.Request], Any]
FAST_RETRY = RetryPolicy(attempts=4, first_delay=0.01, max_delay=0.05)

EXAMPLE_RESULT = {
    "total": 2,
    "successful": 1,
    "failed": 1,
    "errors": [{"row": 12, "email": "invalido@test", "error": "Invalid email: invalido@test"}],
    "emails_sent": 1,
    "emails_failed": 0,
    "internal_count": 1,
    "external_count": 0,
}


def body_of(server: LiveServer, job_id: str) -> dict[str, Any]:
    """The GET body for a job, read from the server's SQLite file."""
    log = SqliteLog(server.db_path)
    try:
        view = log.get_job(job_id, 1000)
        assert view is not None
        return job_body(view.state, view.errors)
    finally:
        log.close()


def event_count(server: LiveServer, job_id: str) -> int:
    log = SqliteLog(server.db_path)
    try:
        return len(log.read_job_events(job_id))
    finally:
        log.close()


def url_of(server: LiveServer, transport: str) -> str:
    return server.base_url if transport == "http" else server.store_url


def report_example(job: Job | AsyncJob) -> None:
    """The issue's example worker, line for line."""
    job.started()
    job.row_succeeded(1, "ana@uni.edu", internal=True)
    job.email_sent(1, "ana@uni.edu")
    job.row_failed(12, "invalido@test", "Invalid email: invalido@test")
    job.progress(25, 50, "Procesando fila 25 de 50")
    job.succeeded()


def fail_inside(job: Job, exc: Exception) -> None:
    """A worker that starts, then meets `exc`."""
    with job:
        job.started()
        raise exc


async def fail_inside_async(job: AsyncJob) -> None:
    """An asyncio worker that reports a row, then divides by zero."""
    async with job:
        job.row_succeeded(1, "a@uni.edu", internal=True)
        _ = 1 / 0


def send_now(job: Job, record: Callable[[], None]) -> None:
    """Record one event inside the job block and send it at once."""
    with job:
        record()
        job.flush()


@pytest.mark.parametrize("transport", ["http", "sqlite"])
def test_sync_worker_reports_a_job_to_success(live_server: LiveServer, transport: str) -> None:
    """The README's worker, synchronous, ends with the counters its events imply."""
    url = url_of(live_server, transport)
    with jobtracker.connect(url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job(total=50, label="sync")
        with tracker.job(job_id) as job:
            report_example(job)
    assert body_of(live_server, job_id) == {
        "job_id": job_id, "status": "SUCCESS", "result": EXAMPLE_RESULT}


@pytest.mark.parametrize("transport", ["http", "sqlite"])
async def test_async_worker_reports_a_job_to_success(
    live_server: LiveServer, transport: str
) -> None:
    """The asyncio twin reports the same job the same way."""
    url = url_of(live_server, transport)
    async with jobtracker.connect_async(url, api_key=live_server.owner_key) as tracker:
        job_id = await tracker.create_job(total=50)
        async with tracker.job(job_id) as job:
            report_example(job)
    assert body_of(live_server, job_id)["result"] == EXAMPLE_RESULT


@pytest.mark.parametrize("transport", ["http", "sqlite"])
def test_exception_in_block_records_failed_and_reraises(
    live_server: LiveServer, transport: str
) -> None:
    """An exception escaping the job block marks the job FAILURE with its message, then rises."""
    url = url_of(live_server, transport)
    with jobtracker.connect(url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job()
        with pytest.raises(LookupError, match="Achievement not found"):
            fail_inside(tracker.job(job_id), LookupError("Achievement not found"))
    assert body_of(live_server, job_id) == {
        "job_id": job_id, "status": "FAILURE", "error": "Achievement not found"}


@pytest.mark.parametrize("transport", ["http", "sqlite"])
async def test_async_exception_in_block_records_failed(
    live_server: LiveServer, transport: str
) -> None:
    """The asyncio block does the same: FAILURE recorded, the exception re-raised."""
    url = url_of(live_server, transport)
    async with jobtracker.connect_async(url, api_key=live_server.owner_key) as tracker:
        job_id = await tracker.create_job()
        with pytest.raises(ZeroDivisionError):
            await fail_inside_async(tracker.job(job_id))
    assert body_of(live_server, job_id) == {
        "job_id": job_id, "status": "FAILURE", "error": "division by zero"}


def test_worker_key_reports_on_a_job_it_does_not_own(live_server: LiveServer) -> None:
    """A `worker` key appends over HTTP to a job created by its owner."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as owner:
        job_id = owner.create_job(total=1)
    with jobtracker.connect(live_server.base_url, api_key=live_server.worker_key) as worker, \
            worker.job(job_id) as job:
        job.row_succeeded(1, "a@gmail.com", internal=False)
        job.succeeded()
    assert body_of(live_server, job_id)["result"]["external_count"] == 1


def test_create_job_with_the_same_id_is_idempotent(live_server: LiveServer) -> None:
    """Creating a named job twice (a retried task) returns the same, still PENDING, job."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as tracker:
        first = tracker.create_job(job_id="celery-task-1", total=3)
        again = tracker.create_job(job_id="celery-task-1", total=3)
    assert first == again == "celery-task-1"
    assert body_of(live_server, first) == {"job_id": first, "status": "PENDING"}


def test_events_travel_in_batches_of_the_configured_size(live_server: LiveServer) -> None:
    """25 rows with batch_size 10 (and a long age bound) take 3 appends, not 25."""
    with jobtracker.connect(
        live_server.base_url, api_key=live_server.owner_key, batch_size=10, max_delay=60
    ) as tracker:
        job_id = tracker.create_job()
        with tracker.job(job_id) as job:
            for row in range(25):
                job.row_succeeded(row, f"p{row}@uni.edu", internal=True)
    assert len(live_server.append_requests) == 3
    assert event_count(live_server, job_id) == 26


def test_a_waiting_event_is_sent_after_max_delay(live_server: LiveServer) -> None:
    """An event does not wait for the batch to fill: it is in the log soon after max_delay."""
    with jobtracker.connect(live_server.store_url, api_key=live_server.owner_key,
                            max_delay=0.05) as tracker:
        job_id = tracker.create_job()
        with tracker.job(job_id) as job:
            job.started()
            deadline = time.monotonic() + 5
            while event_count(live_server, job_id) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert body_of(live_server, job_id)["status"] == "STARTED"


def test_refusal_raises_with_the_servers_detail_and_is_not_retried(
    live_server: LiveServer,
) -> None:
    """A 409 is final: the SDK raises `Conflict` carrying the server's detail, after one try."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job()
        job = tracker.job(job_id)
        with job:
            job.row_succeeded(7, "a@uni.edu", internal=True)
        with pytest.raises(Conflict, match=r"row 7 .* already has an outcome"):
            send_now(job, lambda: job.row_failed(7, "a@uni.edu", "second outcome"))
    assert len(live_server.append_requests) == 3  # 1 good + 1 refused + the block's `failed`


def test_unknown_job_raises_job_not_found(live_server: LiveServer) -> None:
    """Reporting on a job nobody created raises `JobNotFound` ("Job not found")."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as tracker:
        job = tracker.job("nobody-made-this")
        with pytest.raises(JobNotFound, match="Job not found"):
            send_now(job, job.started)


def test_direct_store_needs_a_key_to_create_a_job(live_server: LiveServer) -> None:
    """Straight into SQLite, a job still needs an owner: creating one without a key is refused."""
    with jobtracker.connect(live_server.store_url) as tracker, \
            pytest.raises(NotAuthenticated, match="api_key"):
        tracker.create_job()


def test_dropped_response_is_retried_and_counted_once(
    live_server_with: Callable[..., LiveServer],
) -> None:
    """The server commits a batch but the connection drops before the answer: the SDK re-sends
    it and the log's event ids make the re-send a duplicate, so nothing is counted twice."""
    dropped: list[str] = []

    @web.middleware
    async def drop_first_append_answer(request: web.Request, handler: Handler) -> Any:
        response = await handler(request)
        if request.path.endswith("/events") and not dropped:
            dropped.append(request.path)
            assert request.transport is not None
            request.transport.close()  # committed, but the worker never hears back
        return response

    server = live_server_with(drop_first_append_answer)
    with jobtracker.connect(server.base_url, api_key=server.owner_key, retry=FAST_RETRY) as tracker:
        job_id = tracker.create_job(total=50)
        with tracker.job(job_id) as job:
            report_example(job)
    assert dropped
    assert len(server.append_requests) == 2
    assert body_of(server, job_id)["result"] == EXAMPLE_RESULT
    assert event_count(server, job_id) == 7


async def test_async_dropped_response_is_retried_and_counted_once(
    live_server_with: Callable[..., LiveServer],
) -> None:
    """The same dropped answer, seen by the asyncio SDK: re-sent, deduplicated, counted once."""
    dropped: list[str] = []

    @web.middleware
    async def drop_first_append_answer(request: web.Request, handler: Handler) -> Any:
        response = await handler(request)
        if request.path.endswith("/events") and not dropped:
            dropped.append(request.path)
            assert request.transport is not None
            request.transport.close()
        return response

    server = live_server_with(drop_first_append_answer)
    async with jobtracker.connect_async(
        server.base_url, api_key=server.owner_key, retry=FAST_RETRY
    ) as tracker:
        job_id = await tracker.create_job(total=50)
        async with tracker.job(job_id) as job:
            report_example(job)
    assert len(server.append_requests) == 2
    assert body_of(server, job_id)["result"] == EXAMPLE_RESULT


def test_server_errors_are_retried_until_they_pass(
    live_server_with: Callable[..., LiveServer],
) -> None:
    """A 503 is transient: the SDK backs off and tries again, and the job completes."""
    answered: list[int] = []

    @web.middleware
    async def unavailable_twice(request: web.Request, handler: Handler) -> Any:
        if request.path.endswith("/events") and len(answered) < 2:
            answered.append(503)
            return web.json_response({"detail": "busy"}, status=503)
        return await handler(request)

    server = live_server_with(unavailable_twice)
    with jobtracker.connect(server.base_url, api_key=server.owner_key, retry=FAST_RETRY) as tracker:
        job_id = tracker.create_job(total=50)
        with tracker.job(job_id) as job:
            report_example(job)
    assert answered == [503, 503]
    assert body_of(server, job_id)["result"] == EXAMPLE_RESULT


def test_direct_store_refuses_an_ill_typed_field(live_server: LiveServer) -> None:
    """Straight into SQLite there is no JSON codec: a row number given as text is still refused."""
    with jobtracker.connect(live_server.store_url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job()
        job = tracker.job(job_id)
        text_row: Any = "5"
        with pytest.raises(InvalidInput, match=r"events\[0\]\.row: must be an integer"):
            send_now(job, lambda: job.row_succeeded(text_row, "a@uni.edu", internal=True))
    assert event_count(live_server, job_id) == 2  # created, and the block's `failed`


def test_sdk_event_ids_are_time_ordered_uuids() -> None:
    """Event ids the SDK assigns are version-7 UUIDs in their usual text form, never repeated,
    carrying the time they were made: ids made later sort after earlier ones (so the log's index
    on them grows at one end), and their text does too."""
    earlier = new_event_ids(1000)
    time.sleep(0.002)
    later = [new_event_id() for _ in range(1000)]
    assert len(set(earlier + later)) == 2000
    for text in earlier + later:
        parsed = uuid.UUID(text)
        assert (str(parsed), parsed.version, parsed.variant) == (text, 7, uuid.RFC_4122)
    assert max(earlier) < min(later)
    made_at_ms = uuid.UUID(later[0]).int >> 80
    assert abs(made_at_ms - time.time() * 1000) < 60_000


def test_sync_sdk_reaches_an_asyncio_store_through_its_own_loop(live_server: LiveServer) -> None:
    """Stores that only speak asyncio (PostgreSQL) serve the sync SDK from a loop in a thread."""
    transport = BlockingStoreTransport(live_server.store_url, live_server.owner_key)
    tracker = Tracker(transport, Options(max_delay=60))
    with tracker:
        job_id = tracker.create_job(total=50)
        with tracker.job(job_id) as job:
            report_example(job)
    assert body_of(live_server, job_id)["result"] == EXAMPLE_RESULT


async def test_async_worker_that_never_yields_still_sends_bounded_batches(
    live_server: LiveServer,
) -> None:
    """Rows recorded without awaiting in between still travel in batches of at most batch_size."""
    async with jobtracker.connect_async(
        live_server.base_url, api_key=live_server.owner_key, batch_size=10, max_delay=60
    ) as tracker:
        job_id = await tracker.create_job()
        async with tracker.job(job_id) as job:
            for row in range(35):
                job.row_succeeded(row, f"p{row}@uni.edu", internal=False)
    assert len(live_server.append_requests) == 4
    assert body_of(live_server, job_id)["progress"]["current"] == 35


async def test_async_waiting_event_is_sent_after_max_delay(live_server: LiveServer) -> None:
    """The asyncio SDK sends a lone event once it has waited max_delay, without a flush."""
    async with jobtracker.connect_async(
        live_server.base_url, api_key=live_server.owner_key, max_delay=0.05
    ) as tracker:
        job_id = await tracker.create_job()
        async with tracker.job(job_id) as job:
            job.started()
            for _ in range(250):
                if event_count(live_server, job_id) == 2:
                    break
                await asyncio.sleep(0.02)
            assert body_of(live_server, job_id)["status"] == "STARTED"


@pytest.mark.parametrize("transport", ["http", "sqlite"])
def test_one_tracker_reports_jobs_from_many_threads(
    live_server: LiveServer, transport: str
) -> None:
    """Threads sharing one tracker (a threaded worker pool) each report their own job intact."""
    url = url_of(live_server, transport)
    no_retry = RetryPolicy(attempts=1)  # a clash between threads must show, not be retried away
    with jobtracker.connect(url, api_key=live_server.owner_key, batch_size=3, max_delay=0.001,
                            retry=no_retry) as tracker:
        job_ids = [tracker.create_job(total=40) for _ in range(4)]

        def work(job_id: str) -> None:
            with tracker.job(job_id) as job:
                for row in range(40):
                    job.row_succeeded(row, f"p{row}@uni.edu", internal=row % 2 == 0)
                job.succeeded()

        threads = [threading.Thread(target=work, args=(job_id,)) for job_id in job_ids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for job_id in job_ids:
        result = body_of(live_server, job_id)["result"]
        assert (result["successful"], result["internal_count"]) == (40, 20)


def test_unknown_key_raises_not_authenticated(live_server: LiveServer) -> None:
    """A 401 maps back to `NotAuthenticated`, carrying the server's detail."""
    bogus = "uc_live_" + "x" * 43
    with jobtracker.connect(live_server.base_url, api_key=bogus) as tracker, \
            pytest.raises(NotAuthenticated, match="Invalid or revoked API key"):
        tracker.create_job()
