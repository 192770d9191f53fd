"""What the worker SDK shares whatever the transport: the reporting calls, the send buffer, the
batching and retry options, and retrying itself (`worker` builds the sync and asyncio handles on
these)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import attrs

from jobtracker.domain.errors import ConfigError, StoreUnavailable
from jobtracker.domain.events import (
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

    attempts: int = 8
    first_delay: float = 0.05
    max_delay: float = 2.0

    def delay(self, attempt: int) -> float:
        """The pause before retry number `attempt` (1-based): doubling, capped, jittered."""
        ceiling = min(self.max_delay, self.first_delay * 2.0 ** (attempt - 1))
        # Jitter spreads out workers that all lost the server at the same moment.
        return ceiling * random.uniform(0.5, 1.0)


#: The retry policy a tracker uses unless told otherwise.
DEFAULT_RETRY = RetryPolicy()


@attrs.frozen
class Options:
    """How a tracker batches and retries."""

    batch_size: int = 500
    max_delay: float = 0.05
    retry: RetryPolicy = DEFAULT_RETRY

    def __attrs_post_init__(self) -> None:
        if self.batch_size < 1 or self.max_delay < 0 or self.retry.attempts < 1:
            raise ConfigError("batch_size and retry attempts must be >= 1, max_delay >= 0")


def retrying(call: Callable[[], T], policy: RetryPolicy) -> T:
    """Run `call`, retrying `StoreUnavailable`; any other error is final and raised at once."""
    for attempt in range(1, policy.attempts):
        try:
            return call()
        except StoreUnavailable:
            time.sleep(policy.delay(attempt))
    return call()


async def retrying_async(call: Callable[[], Awaitable[T]], policy: RetryPolicy) -> T:
    """The asyncio twin of `retrying`."""
    for attempt in range(1, policy.attempts):
        try:
            return await call()
        except StoreUnavailable:
            await asyncio.sleep(policy.delay(attempt))
    return await call()


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


#: Events that end a job: sent at once.
TERMINAL = frozenset({Succeeded, Failed})


# The tuple constructor, not the NamedTuple's own (a Python function): one item per reported row.
_new_item = tuple.__new__


class Buffer:
    """Events waiting to be sent, and since when the oldest has waited."""

    def __init__(self) -> None:
        self.items: list[Event] = []
        self.since = 0.0

    def add(self, event: Event) -> int:
        if not self.items:
            self.since = time.monotonic()
        self.items.append(event)
        return len(self.items)

    def take(self) -> list[NewEvent]:
        """Empty the buffer; its events get their ids now, before their first send."""
        events, self.items = self.items, []
        ids = new_event_ids(len(events))
        return [_new_item(NewEvent, pair) for pair in zip(ids, events, strict=True)]

    def wait_left(self, max_delay: float) -> float | None:
        """Seconds until the oldest event is due; None when there is nothing to send."""
        if not self.items:
            return None
        return max(0.0, self.since + max_delay - time.monotonic())
