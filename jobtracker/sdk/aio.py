"""The worker SDK for asyncio: `connect_async`, `AsyncTracker` and `AsyncJob`, the twins of
`worker.py`'s synchronous classes (see its docstring for batching and retries).

    async with jobtracker.connect_async(url, api_key=KEY) as tracker:
        async with tracker.job(job_id) as job:
            job.started()
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

from jobtracker.domain.errors import Conflict, JobNotFound, JobtrackerError
from jobtracker.domain.events import (
    Event,
    NewEvent,
    Succeeded,
    new_job_id,
)
from jobtracker.domain.listing import DEFAULT_LIMIT
from jobtracker.sdk.direct import AsyncStoreTransport
from jobtracker.sdk.follow import Snapshot, follow_async
from jobtracker.sdk.http import AsyncHttpTransport
from jobtracker.sdk.listing import listing_params, next_page
from jobtracker.sdk.recording import (
    DEFAULT_RETRY,
    TERMINAL,
    Buffer,
    Options,
    Recorder,
    RetryPolicy,
    beat_interval,
    cancel_heard,
    ending_after_refusal,
    retrying_async,
    unsent,
)
from jobtracker.sdk.transport import AsyncTransport, NewJob
from jobtracker.sdk.worker import http_key, is_http
from jobtracker.store.base import AppendResult


class AsyncJob(Recorder):
    """One job's reporting handle for asyncio: use it with `async with`.

    Recording an event never blocks; sending happens in tasks on the loop. `await job.flush()`
    waits until everything recorded so far is in the log.
    """

    def __init__(
        self, job_id: str, transport: AsyncTransport, options: Options, beat_every: float
    ) -> None:
        self.job_id = job_id
        self.last: AppendResult | None = None
        self._transport = transport
        self._options = options
        self._buffer = Buffer()
        self._sending = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        self._beat_every = beat_every
        self._beater: asyncio.Task[None] | None = None
        self._cancel_requested = False

    async def __aenter__(self) -> AsyncJob:
        self._beater = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def _beat(self) -> None:
        """Heartbeat until the block ends (see `Job._beat`)."""
        while True:
            await asyncio.sleep(self._beat_every)
            try:
                if await self._transport.heartbeat(self.job_id):
                    self._cancel_requested = True
            except (Conflict, JobNotFound):
                return
            except JobtrackerError:
                continue

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._beater is not None:
            self._beater.cancel()
            self._beater = None
        if exc is None:
            await self.flush()
            return
        try:
            if not self._finished:
                self._end_with(exc)
            await self.flush()
        except Exception as lost:
            exc.add_note(f"jobtracker: could not record the failure of job {self.job_id}: {lost}")

    def _record(self, event: Event) -> None:
        self._raise_background_failure()
        if self._cancel_requested and type(event) not in TERMINAL:
            raise cancel_heard(self.job_id)
        waiting = self._buffer.add(event)
        # Exactly at the bound: one send task takes everything recorded until it runs.
        if waiting == self._options.batch_size or type(event) in TERMINAL:
            self._send_soon()
        elif waiting == 1:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._options.max_delay, self._send_soon)

    def _send_soon(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.get_running_loop().create_task(self._send_in_background())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_in_background(self) -> None:
        try:
            await self._send()
        except Exception as exc:  # handed to the worker at its next call
            self._failure = exc

    async def _send(self) -> None:
        async with self._sending:
            events = self._buffer.take()
            # A worker that records without yielding to the loop may have gone past the bound.
            size = self._options.batch_size
            for start in range(0, len(events), size):
                try:
                    await self._send_batch(events[start : start + size])
                except BaseException as exc:
                    kept = unsent(events, start, size, exc)
                    ending = ending_after_refusal(events[start:], exc)
                    self._buffer.give_back([item for item in kept if item is not ending])
                    if ending is not None:
                        await self._send_ending_alone(ending)
                    raise

    async def _send_ending_alone(self, ending: NewEvent) -> None:
        """See `Job._send_ending_alone`: a `failed` is sent again on its own; a `succeeded` is
        not (rows went missing), so leaving the block records the refusal."""
        if type(ending.event) is Succeeded:
            self._finished = False
            return
        with contextlib.suppress(JobtrackerError):
            await self._send_batch([ending])

    async def _send_batch(self, batch: list[NewEvent]) -> None:
        send = self._transport.append
        self.last = await retrying_async(lambda: send(self.job_id, batch), self._options.retry)
        if self.last.cancel_requested:
            self._cancel_requested = True

    async def flush(self) -> None:
        """Send every recorded event now and wait until they are in the log (on giving up, as
        `Job.flush`)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tasks:
            await asyncio.gather(*self._tasks)
        self._raise_background_failure()
        await self._send()

    def _raise_background_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure


class AsyncTracker:
    """A connection to the log for an asyncio worker; see `connect_async`."""

    def __init__(self, transport: AsyncTransport, options: Options) -> None:
        self._transport = transport
        self.options = options
        self._heartbeat_timeouts: dict[str, int | None] = {}

    async def create_job(
        self,
        *,
        total: int | None = None,
        job_id: str | None = None,
        label: str | None = None,
        heartbeat_timeout: int | None = None,
        timeout: int | None = None,  # noqa: ASYNC109 - the job's limit, not this call's
        owner: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Create a job (PENDING) owned by this tracker's key, or by the `owner` a worker key
        names; return its id (see `Tracker.create_job`)."""
        job = NewJob(job_id or new_job_id(), total, label, heartbeat_timeout, timeout, owner,
                     labels)
        create = self._transport.create_job
        created = await retrying_async(lambda: create(job), self.options.retry)
        self._heartbeat_timeouts[created] = heartbeat_timeout
        return created

    def job(self, job_id: str, *, heartbeat_timeout: int | None = None) -> AsyncJob:
        """A handle to report on `job_id`; use it in an `async with` block (heartbeats as
        `Tracker.job`'s)."""
        limit = heartbeat_timeout or self._heartbeat_timeouts.get(job_id)
        return AsyncJob(job_id, self._transport, self.options, beat_interval(limit))

    async def list_jobs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        labels: Mapping[str, str] | None = None,
        created_after: dt.datetime | str | None = None,
        created_before: dt.datetime | str | None = None,
        page_size: int = DEFAULT_LIMIT,
    ) -> AsyncIterator[dict[str, Any]]:
        """The asyncio twin of `Tracker.list_jobs`: `async for job in tracker.list_jobs(...)`."""
        params = listing_params(status, labels, created_after, created_before, page_size)
        list_page = self._transport.list_page
        while True:
            page = await retrying_async(functools.partial(list_page, params), self.options.retry)
            for item in page["jobs"]:
                yield item
            if page["next_page_token"] is None:
                return
            params = next_page(params, page["next_page_token"])

    async def get(self, job_id: str) -> dict[str, Any]:
        """The job's body now (see `Tracker.get`)."""
        fetch = self._transport.fetch
        snapshot = await retrying_async(lambda: fetch(job_id, None, 0), self.options.retry)
        assert snapshot.body is not None  # asked without an ETag: never "unchanged"
        return snapshot.body

    def watch(self, job_id: str, timeout: float | None = None) -> AsyncIterator[dict[str, Any]]:
        """The asyncio twin of `Tracker.watch`: `async for body in tracker.watch(job_id)`."""
        fetch = self._transport.fetch
        policy = self.options.retry

        async def fetch_retrying(etag: str | None, wait: int) -> Snapshot:
            return await retrying_async(lambda: fetch(job_id, etag, wait), policy)

        return follow_async(fetch_retrying, timeout)

    async def wait(
        self,
        job_id: str,
        timeout: float | None = None,  # noqa: ASYNC109 - the public name, as in the sync SDK
    ) -> dict[str, Any]:
        """The job's terminal body; TimeoutError after `timeout` s."""
        last: dict[str, Any] = {}
        async for body in self.watch(job_id, timeout):
            last = body
        return last

    async def close(self) -> None:
        """Close the connection."""
        await self._transport.close()

    async def __aenter__(self) -> AsyncTracker:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def connect_async(
    url: str,
    *,
    api_key: str | None = None,
    batch_size: int = 500,
    max_delay: float = 0.05,
    retry: RetryPolicy = DEFAULT_RETRY,
    timeout: float = 10.0,
) -> AsyncTracker:
    """The asyncio twin of `connect`: `async with connect_async(url, api_key=KEY) as tracker:`."""
    options = Options(batch_size, max_delay, retry)
    transport: AsyncTransport
    if is_http(url):
        transport = AsyncHttpTransport(url, http_key(api_key), timeout)
    else:
        transport = AsyncStoreTransport(url, api_key)
    return AsyncTracker(transport, options)
