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
are retried with capped exponential backoff for up to a minute (`RetryPolicy.give_up_after`), then
raise `StoreUnavailable` with the unsent events kept; a refusal raises at once with the `detail`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

from jobtracker.domain.errors import ConfigError, Conflict, JobNotFound, JobtrackerError
from jobtracker.domain.events import (
    Event,
    NewEvent,
    Succeeded,
    new_job_id,
)
from jobtracker.domain.listing import DEFAULT_LIMIT
from jobtracker.sdk.direct import BlockingStoreTransport, SqliteTransport
from jobtracker.sdk.follow import follow
from jobtracker.sdk.http import HttpTransport
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
    retrying,
    unsent,
)
from jobtracker.sdk.transport import NewJob, Transport
from jobtracker.store.base import AppendResult
from jobtracker.store.url import parse_store_url

# Re-exported: the SDK's options are part of its public surface.
__all__ = [
    "EventIds",
    "Job",
    "Options",
    "RetryPolicy",
    "Tracker",
    "connect",
]


#: Chooses the id of an event a job records; None leaves it to the SDK (a fresh UUIDv7).
EventIds = Callable[[Event], str | None]


class Job(Recorder):
    """One job's reporting handle (synchronous): use it as a context manager.

    A background thread sends events that have waited `max_delay`; the calling thread sends a full
    batch itself, which also slows a worker down to what the log can take.
    """

    def __init__(
        self,
        job_id: str,
        transport: Transport,
        options: Options,
        beat_every: float,
        event_ids: EventIds | None = None,
    ) -> None:
        self.job_id = job_id
        self._event_ids = event_ids
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
        self._beat_every = beat_every
        self._beating = threading.Event()
        self._beater: threading.Thread | None = None
        self._cancel_requested = False

    def __enter__(self) -> Job:
        self._closed = False
        self._timer = threading.Thread(
            target=self._send_when_due, name=f"jobtracker-job-{self.job_id}", daemon=True
        )
        self._timer.start()
        self._beating.clear()
        self._beater = threading.Thread(
            target=self._beat, name=f"jobtracker-heartbeat-{self.job_id}", daemon=True
        )
        self._beater.start()
        return self

    def _beat(self) -> None:
        """Heartbeat until the block ends, so a worker busy on a slow row is not taken for lost."""
        while not self._beating.wait(self._beat_every):
            try:
                if self._transport.heartbeat(self.job_id):
                    self._cancel_requested = True
            except (Conflict, JobNotFound):
                return  # finished (or gone): nothing left to keep alive
            except JobtrackerError:
                continue  # a missed heartbeat is made up by the next one

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop_timer()
        if exc is None:
            self.flush()
            return
        try:
            if not self._finished:
                self._end_with(exc)
            self.flush()
        except Exception as lost:
            exc.add_note(f"jobtracker: could not record the failure of job {self.job_id}: {lost}")

    def _record(self, event: Event) -> None:
        if self._failure is not None:
            self._raise_background_failure()
        if self._cancel_requested and type(event) not in TERMINAL:
            raise cancel_heard(self.job_id)
        event_id = None if self._event_ids is None else self._event_ids(event)
        with self._lock:
            waiting = self._buffer.add(event, event_id)
            if waiting == 1:
                self._due.notify()
        if waiting >= self._options.batch_size or type(event) in TERMINAL:
            self.flush()

    def flush(self) -> None:
        """Send every recorded event now (retrying transient failures).

        When the retry policy gives up, `StoreUnavailable` is raised and the events not sent stay
        buffered, with their ids, for the next flush; a refused batch is dropped.
        """
        self._raise_background_failure()
        with self._sending:
            with self._lock:
                events = self._buffer.take()
            size = self._options.batch_size
            for start in range(0, len(events), size):
                try:
                    self._send_batch(events[start : start + size])
                except BaseException as exc:
                    kept = unsent(events, start, size, exc)
                    ending = ending_after_refusal(events[start:], exc)
                    with self._lock:
                        self._buffer.give_back([item for item in kept if item is not ending])
                    if ending is not None:
                        self._send_ending_alone(ending)
                    raise

    def _send_ending_alone(self, ending: NewEvent) -> None:
        """A refused batch took the job's ending with it. A `failed` is sent again on its own;
        a `succeeded` is not (rows went missing), so leaving the block records the refusal."""
        if type(ending.event) is Succeeded:
            self._finished = False
            return
        with contextlib.suppress(JobtrackerError):
            self._send_batch([ending])

    def _send_batch(self, batch: list[NewEvent]) -> None:
        send = self._transport.append
        self.last = retrying(lambda: send(self.job_id, batch), self._options.retry)
        if self.last.cancel_requested:
            self._cancel_requested = True

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
        self._beating.set()
        if self._beater is not None:
            self._beater.join()
            self._beater = None


class Tracker:
    """A connection to the log for a synchronous worker; see `connect`."""

    def __init__(self, transport: Transport, options: Options) -> None:
        self._transport = transport
        self.options = options
        self._heartbeat_timeouts: dict[str, int | None] = {}

    def create_job(
        self,
        *,
        total: int | None = None,
        job_id: str | None = None,
        label: str | None = None,
        heartbeat_timeout: int | None = None,
        timeout: int | None = None,
        owner: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> str:
        """Create a job (PENDING) owned by this tracker's key; return its id.

        The id is chosen here when not given, so a retried creation is idempotent.
        `heartbeat_timeout` and `timeout` are the job's limits in seconds (see the README,
        "When workers die"). A worker key names the owner key id the job is for with `owner`.
        """
        job = NewJob(job_id or new_job_id(), total, label, heartbeat_timeout, timeout, owner,
                     labels)
        create = self._transport.create_job
        created = retrying(lambda: create(job), self.options.retry)
        self._heartbeat_timeouts[created] = heartbeat_timeout
        return created

    def job(
        self,
        job_id: str,
        *,
        heartbeat_timeout: int | None = None,
        event_ids: EventIds | None = None,
    ) -> Job:
        """A handle to report on `job_id`; use it in a `with` block.

        While the block is open it heartbeats three times per the job's heartbeat timeout: the
        one given here, else the one this tracker created the job with, else the default 600 s.
        `event_ids` chooses an event's id (None: a fresh one), so a redelivered task that
        reports the same rows again is counted once.
        """
        limit = heartbeat_timeout or self._heartbeat_timeouts.get(job_id)
        return Job(job_id, self._transport, self.options, beat_interval(limit), event_ids)

    def list_jobs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        labels: Mapping[str, str] | None = None,
        created_after: dt.datetime | str | None = None,
        created_before: dt.datetime | str | None = None,
        page_size: int = DEFAULT_LIMIT,
    ) -> Iterator[dict[str, Any]]:
        """This tracker's key's jobs, newest first, as `GET /api/v1/jobs` lists them, following
        the pages as you iterate: `status` one or several, `labels` all must match, times
        aware datetimes or RFC 3339 text. Jobs created while you iterate are not shown; every
        job that existed when you began is shown once."""
        params = listing_params(status, labels, created_after, created_before, page_size)
        list_page = self._transport.list_page
        while True:
            page = retrying(functools.partial(list_page, params), self.options.retry)
            yield from page["jobs"]
            if page["next_page_token"] is None:
                return
            params = next_page(params, page["next_page_token"])

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's body now: the dict `GET /api/v1/jobs/{job_id}` answers.

        `JobNotFound` for an unknown id; `AccessDenied` for another owner's job (over HTTP).
        """
        fetch = self._transport.fetch
        snapshot = retrying(lambda: fetch(job_id, None, 0), self.options.retry)
        assert snapshot.body is not None  # asked without an ETag: never "unchanged"
        return snapshot.body

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


def is_http(url: str) -> bool:
    """Whether `url` names a server (else a store)."""
    return url.startswith(("http://", "https://"))


def http_key(api_key: str | None) -> str:
    """The key a server connection needs; a `ConfigError` without one."""
    if not api_key:
        raise ConfigError(
            "connecting to a server needs a key: connect(url, api_key=KEY), KEY being the last "
            "line `jobtracker keys create --name NAME` printed (a worker-scope key for workers)"
        )
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
    if is_http(url):
        transport = HttpTransport(url, http_key(api_key), timeout)
    elif url.startswith("sqlite:"):
        transport = SqliteTransport(parse_store_url(url).location, api_key)
    else:
        transport = BlockingStoreTransport(url, api_key)
    return Tracker(transport, options)
