"""The worker SDK: report a job's progress from any Python worker, sync or asyncio.

    with jobtracker.connect("http://127.0.0.1:8080", api_key=KEY) as tracker:
        with tracker.job(job_id) as job:
            job.started()
            job.row_succeeded(1, "ana@uni.edu", internal=True)
            job.succeeded()

`connect` takes a server's base URL (with `api_key`) or a store URL (`sqlite:///jobs.db`) to write
straight into the store; `connect_async` is the asyncio twin. Events are buffered and sent in
batches: when `batch_size` are waiting, when the oldest has waited `max_delay` seconds, on a
terminal event and on leaving the block. Each event gets its id (a UUID) before its first send, so
a batch re-sent after a timeout is deduplicated by the log, never counted twice. Transient failures
are retried with capped exponential backoff; a refusal raises at once with the server's `detail`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from types import TracebackType
from typing import Any

from jobtracker.domain.errors import ConfigError
from jobtracker.domain.events import (
    Event,
    NewEvent,
    new_job_id,
)
from jobtracker.sdk.follow import Snapshot, follow, follow_async
from jobtracker.sdk.recording import (
    DEFAULT_RETRY,
    TERMINAL,
    Buffer,
    Options,
    Recorder,
    RetryPolicy,
    failure_text,
    retrying,
    retrying_async,
)
from jobtracker.sdk.transport import (
    AsyncHttpTransport,
    AsyncStoreTransport,
    AsyncTransport,
    BlockingStoreTransport,
    HttpTransport,
    SqliteTransport,
    Transport,
)
from jobtracker.store.base import AppendResult
from jobtracker.store.url import parse_store_url

# Re-exported: the SDK's options are part of its public surface.
__all__ = [
    "AsyncJob",
    "AsyncTracker",
    "Job",
    "Options",
    "RetryPolicy",
    "Tracker",
    "connect",
    "connect_async",
]


class Job(Recorder):
    """One job's reporting handle (synchronous): use it as a context manager.

    A background thread sends events that have waited `max_delay`; the calling thread sends a full
    batch itself, which also slows a worker down to what the log can take.
    """

    def __init__(self, job_id: str, transport: Transport, options: Options) -> None:
        self.job_id = job_id
        self.last: AppendResult | None = None
        self._transport = transport
        self._options = options
        self._buffer = Buffer()
        self._lock = threading.Lock()
        self._due = threading.Condition(self._lock)
        self._sending = threading.Lock()  # batches leave in the order they were recorded
        self._closed = True
        self._failure: BaseException | None = None
        self._timer: threading.Thread | None = None

    def __enter__(self) -> Job:
        self._closed = False
        self._timer = threading.Thread(
            target=self._send_when_due, name=f"jobtracker-job-{self.job_id}", daemon=True
        )
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop_timer()
        if exc is None:
            self.flush()
            return
        try:
            if not self._finished:
                self.failed(failure_text(exc))
            self.flush()
        except Exception as lost:
            exc.add_note(f"jobtracker: could not record the failure of job {self.job_id}: {lost}")

    def _record(self, event: Event) -> None:
        if self._failure is not None:
            self._raise_background_failure()
        with self._lock:
            waiting = self._buffer.add(event)
            if waiting == 1:
                self._due.notify()
        if waiting >= self._options.batch_size or type(event) in TERMINAL:
            self.flush()

    def flush(self) -> None:
        """Send every recorded event now (retrying transient failures)."""
        self._raise_background_failure()
        with self._sending:
            with self._lock:
                batch = self._buffer.take()
            if batch:
                send = self._transport.append
                self.last = retrying(lambda: send(self.job_id, batch), self._options.retry)

    def _raise_background_failure(self) -> None:
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def _send_when_due(self) -> None:
        while True:
            with self._lock:
                while not self._closed and self._buffer.wait_left(self._options.max_delay) != 0:
                    self._due.wait(self._buffer.wait_left(self._options.max_delay))
                if self._closed:
                    return
            try:
                self.flush()
            except BaseException as exc:  # handed to the worker's thread at its next call
                self._failure = exc
                return

    def _stop_timer(self) -> None:
        with self._lock:
            self._closed = True
            self._due.notify()
        if self._timer is not None:
            self._timer.join()
            self._timer = None


class Tracker:
    """A connection to the log for a synchronous worker; see `connect`."""

    def __init__(self, transport: Transport, options: Options) -> None:
        self._transport = transport
        self.options = options

    def create_job(
        self, *, total: int | None = None, job_id: str | None = None, label: str | None = None
    ) -> str:
        """Create a job (PENDING) owned by this tracker's key; return its id.

        The id is chosen here when not given, so a retried creation is idempotent.
        """
        wanted = job_id or new_job_id()
        create = self._transport.create_job
        return retrying(lambda: create(wanted, total, label), self.options.retry)

    def job(self, job_id: str) -> Job:
        """A handle to report on `job_id`; use it in a `with` block."""
        return Job(job_id, self._transport, self.options)

    def watch(self, job_id: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Each new body of the job (the seed's shapes) until its terminal one.

        Long-polls the server (or the store), so nothing is asked between changes; falls back to
        polling at the server's Retry-After. TimeoutError if not finished within `timeout` s.
        """
        fetch = self._transport.fetch
        policy = self.options.retry
        return follow(
            lambda etag, wait: retrying(lambda: fetch(job_id, etag, wait), policy), timeout
        )

    def wait(self, job_id: str, timeout: float | None = None) -> dict[str, Any]:
        """The job's terminal body (SUCCESS or FAILURE); TimeoutError after `timeout` s."""
        last: dict[str, Any] = {}
        for body in self.watch(job_id, timeout):
            last = body
        return last

    def close(self) -> None:
        """Close the connection."""
        self._transport.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_http(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def _http_key(api_key: str | None) -> str:
    if not api_key:
        raise ConfigError("connecting to a server needs api_key=…")
    return api_key


def connect(
    url: str,
    *,
    api_key: str | None = None,
    batch_size: int = 500,
    max_delay: float = 0.05,
    retry: RetryPolicy = DEFAULT_RETRY,
    timeout: float = 10.0,
) -> Tracker:
    """A tracker over HTTP (`http://host:8080`, with `api_key`) or straight into a store URL."""
    options = Options(batch_size, max_delay, retry)
    transport: Transport
    if _is_http(url):
        transport = HttpTransport(url, _http_key(api_key), timeout)
    elif url.startswith("sqlite:"):
        transport = SqliteTransport(parse_store_url(url).location, api_key)
    else:
        transport = BlockingStoreTransport(url, api_key)
    return Tracker(transport, options)


class AsyncJob(Recorder):
    """One job's reporting handle for asyncio: use it with `async with`.

    Recording an event never blocks; sending happens in tasks on the loop. `await job.flush()`
    waits until everything recorded so far is in the log.
    """

    def __init__(self, job_id: str, transport: AsyncTransport, options: Options) -> None:
        self.job_id = job_id
        self.last: AppendResult | None = None
        self._transport = transport
        self._options = options
        self._buffer = Buffer()
        self._sending = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def __aenter__(self) -> AsyncJob:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            await self.flush()
            return
        try:
            if not self._finished:
                self.failed(failure_text(exc))
            await self.flush()
        except Exception as lost:
            exc.add_note(f"jobtracker: could not record the failure of job {self.job_id}: {lost}")

    def _record(self, event: Event) -> None:
        self._raise_background_failure()
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
                await self._send_batch(events[start : start + size])

    async def _send_batch(self, batch: list[NewEvent]) -> None:
        send = self._transport.append
        self.last = await retrying_async(lambda: send(self.job_id, batch), self._options.retry)

    async def flush(self) -> None:
        """Send every recorded event now and wait until they are in the log."""
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

    async def create_job(
        self, *, total: int | None = None, job_id: str | None = None, label: str | None = None
    ) -> str:
        """Create a job (PENDING) owned by this tracker's key; return its id."""
        wanted = job_id or new_job_id()
        create = self._transport.create_job
        return await retrying_async(lambda: create(wanted, total, label), self.options.retry)

    def job(self, job_id: str) -> AsyncJob:
        """A handle to report on `job_id`; use it in an `async with` block."""
        return AsyncJob(job_id, self._transport, self.options)

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
    if _is_http(url):
        transport = AsyncHttpTransport(url, _http_key(api_key), timeout)
    else:
        transport = AsyncStoreTransport(url, api_key)
    return AsyncTracker(transport, options)
