"""What the worker SDK shares whatever the transport: the reporting calls, the send buffer, the
batching and retry options, and retrying itself (`worker` builds the sync and asyncio handles on
these)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import attrs

from jobtracker.domain.control import CANCELLED
from jobtracker.domain.errors import Cancelled, ConfigError, JobtrackerError, StoreUnavailable
from jobtracker.domain.events import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    MAX_TEXT,
    EmailFailed,
    EmailSent,
    Event,
    Failed,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    new_event_ids,
)

T = TypeVar("T")


@attrs.frozen
class RetryPolicy:
    """How often, and how patiently, a transient failure is retried."""

    #: Most tries of one call in all; None: as many as `give_up_after` leaves time for.
    attempts: int | None = None
    first_delay: float = 0.05
    max_delay: float = 2.0
    #: Seconds after a call's first failure when the last retry may start: long enough to ride
    #: out a PostgreSQL restart or a database with every connection taken.
    give_up_after: float = 60.0

    def delay(self, attempt: int) -> float:
        """The pause before retry number `attempt` (1-based): doubling, capped, jittered."""
        ceiling = min(self.max_delay, self.first_delay * 2.0 ** (attempt - 1))
        # Jitter spreads out workers that all lost the server at the same moment.
        return ceiling * random.uniform(0.5, 1.0)

    def pauses(self) -> Iterator[float]:
        """The pause after each failure of one call, in turn; exhausted when it is time to give
        up. The clock starts at the first `next`, the first failure."""
        gives_up_at = time.monotonic() + self.give_up_after
        tries = itertools.count(1) if self.attempts is None else range(1, self.attempts)
        for attempt in tries:
            left = gives_up_at - time.monotonic()
            if left <= 0:
                return
            yield min(self.delay(attempt), left)


#: The retry policy a tracker uses unless told otherwise.
DEFAULT_RETRY = RetryPolicy()


@attrs.frozen
class Options:
    """How a tracker batches and retries."""

    batch_size: int = 500
    max_delay: float = 0.05
    retry: RetryPolicy = DEFAULT_RETRY

    def __attrs_post_init__(self) -> None:
        attempts = 1 if self.retry.attempts is None else self.retry.attempts
        if self.batch_size < 1 or self.max_delay < 0 or attempts < 1:
            raise ConfigError("batch_size and retry attempts must be >= 1, max_delay >= 0")
        if self.retry.give_up_after < 0:
            raise ConfigError("retry give_up_after must be >= 0 seconds")


def retrying(call: Callable[[], T], policy: RetryPolicy) -> T:
    """Run `call`, retrying `StoreUnavailable` until the policy gives up, then raising the last
    one; any other error is final and raised at once."""
    pauses = policy.pauses()
    while True:
        try:
            return call()
        except StoreUnavailable:
            pause = next(pauses, None)
            if pause is None:
                raise
            time.sleep(pause)


async def retrying_async(call: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """The asyncio twin of `retrying`."""
    pauses = policy.pauses()
    while True:
        try:
            return await call()
        except StoreUnavailable:
            pause = next(pauses, None)
            if pause is None:
                raise
            await asyncio.sleep(pause)


def is_refusal(exc: BaseException) -> bool:
    """Whether `exc` is a refusal (sending the same batch again would only repeat it)."""
    return isinstance(exc, JobtrackerError) and not isinstance(exc, StoreUnavailable)


def unsent(events: list[NewEvent], start: int, size: int, exc: BaseException) -> list[NewEvent]:
    """What a flush keeps when its batch `events[start:start + size]` failed with `exc`: the
    batches after it, and that one too unless it was refused (a refusal would only repeat)."""
    return events[start + size if is_refusal(exc) else start :]


def ending_after_refusal(events: list[NewEvent], exc: BaseException) -> NewEvent | None:
    """The job's ending among `events` (a batch that failed with `exc`, and the ones after it)
    when a refusal is about to take it down with rows it has nothing to do with."""
    if not is_refusal(exc):
        return None
    return next((item for item in events if type(item.event) in TERMINAL), None)


def failure_text(exc: BaseException) -> str:
    """What a `failed` event says about an exception: its message, else its class name."""
    text = (str(exc) or type(exc).__name__).replace("\x00", "")
    return text[:MAX_TEXT]


class Recorder:
    """The events a worker reports; subclasses decide how a recorded event travels.

    Events are built with positional arguments: a worker may report millions of rows, and keyword
    arguments to a class cost half as much again as the object itself.
    """

    _finished = False

    @property
    def finished(self) -> bool:
        """Whether this handle recorded the job's end (`succeeded` or `failed`)."""
        return self._finished

    def _record(self, event: Event) -> None:
        raise NotImplementedError

    def started(self) -> None:
        """The worker began processing the job (status STARTED)."""
        self._record(Started())

    def progress(self, current: int, total: int, status: str | None = None) -> None:
        """The worker's own account of how far it got (status PROGRESS)."""
        self._record(ProgressReported(current, total, status))

    def row_succeeded(self, row: int, email: str, *, internal: bool) -> None:
        """Row `row` was issued its credential; `internal` for members of the organisation."""
        self._record(RowSucceeded(row, email, internal))

    def row_failed(self, row: int, email: str, error: str) -> None:
        """Row `row` could not be processed; `error` is listed in the job's result."""
        self._record(RowFailed(row, email, error))

    def email_sent(self, row: int, email: str) -> None:
        """The notification e-mail for row `row` went out."""
        self._record(EmailSent(row, email))

    def email_failed(self, row: int, email: str, error: str) -> None:
        """The notification e-mail for row `row` could not be sent."""
        self._record(EmailFailed(row, email, error))

    def succeeded(self) -> None:
        """The job is done (SUCCESS); sent at once."""
        self._finished = True
        self._record(Succeeded())

    def failed(self, error: str) -> None:
        """The job gave up (FAILURE); sent at once."""
        self._finished = True
        self._record(Failed(error))

    def _end_with(self, exc: BaseException) -> None:
        """Record the end of a job block that an exception left: FAILURE with its text, or
        `Cancelled` when the worker stopped because its owner asked."""
        if isinstance(exc, Cancelled):
            self._end_cancelled()
        else:
            self.failed(failure_text(exc))

    def _end_cancelled(self) -> None:
        """The worker stopped because its owner asked: FAILURE `Cancelled`, sent at once."""
        self._finished = True
        self._record(Failed(CANCELLED, "cancelled"))


def cancel_heard(job_id: str) -> Cancelled:
    """What the worker's next report raises once the job's owner asked it to stop."""
    return Cancelled(f"The owner of job {job_id} asked it to stop; leave the job block")


def beat_interval(heartbeat_timeout: int | None) -> float:
    """How often a job block heartbeats: three times per heartbeat timeout."""
    return (heartbeat_timeout or DEFAULT_HEARTBEAT_TIMEOUT) / 3


#: Events that end a job: sent at once.
TERMINAL = frozenset({Succeeded, Failed})


# The tuple constructor, not the NamedTuple's own (a Python function): one item per reported row.
_new_item = tuple.__new__


class Buffer:
    """Events waiting to be sent, and since when the oldest has waited."""

    def __init__(self) -> None:
        self.items: list[Event] = []
        self.since = 0.0
        #: Ids the worker chose for some of `items`, by index (deterministic ids for redelivery).
        self.fixed: dict[int, str] = {}
        #: Events whose send gave up, with their ids: they go first at the next flush.
        self.unsent: list[NewEvent] = []

    def add(self, event: Event, event_id: str | None = None) -> int:
        if not self.items:
            self.since = time.monotonic()
        if event_id is not None:
            self.fixed[len(self.items)] = event_id
        self.items.append(event)
        return len(self.items)

    def take(self) -> list[NewEvent]:
        """Empty the buffer; its events get their ids now, before their first send."""
        events, self.items = self.items, []
        ids = new_event_ids(len(events))
        if self.fixed:
            for index, event_id in self.fixed.items():
                ids[index] = event_id
            self.fixed = {}
        fresh = [_new_item(NewEvent, pair) for pair in zip(ids, events, strict=True)]
        if not self.unsent:
            return fresh
        unsent, self.unsent = self.unsent, []
        return unsent + fresh

    def give_back(self, events: list[NewEvent]) -> None:
        """Keep events whose send gave up, ahead of the rest; a re-send under the same ids is
        counted once even if the lost attempt did commit."""
        self.unsent = events + self.unsent

    def wait_left(self, max_delay: float) -> float | None:
        """Seconds until the oldest event is due; None when there is nothing to send."""
        if not self.items:
            return None
        return max(0.0, self.since + max_delay - time.monotonic())
