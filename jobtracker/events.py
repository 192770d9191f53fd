"""The events workers append, as frozen value classes with stable wire names.

Names are past tense: an event is a fact that already happened. `check_fields` holds the rules a
single event must meet on its own; rules that depend on the job's history live in `projection.py`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, TypeAlias

import attrs

from jobtracker.errors import InvalidInput

#: Largest integer we accept anywhere: exact in JSON doubles, fits every store's BIGINT.
MAX_INT = 2**53 - 1
MAX_EMAIL = 320
MAX_TEXT = 4000
MAX_EVENT_ID = 128
MAX_LABEL = 200
_TEXT_LIMITS = {"email": MAX_EMAIL, "label": MAX_LABEL, "owner": MAX_EVENT_ID}
#: Free text that may be empty.
OPTIONAL_TEXT = frozenset({"status", "label"})
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@attrs.frozen
class Created:
    """The job exists; written by job creation, never by workers."""

    TYPE: ClassVar[str] = "created"
    owner: str
    total: int | None = None
    label: str | None = None


@attrs.frozen
class Started:
    """A worker began processing the job."""

    TYPE: ClassVar[str] = "started"


@attrs.frozen
class ProgressReported:
    """A worker's own account of how far it got."""

    TYPE: ClassVar[str] = "progress"
    current: int
    total: int
    status: str | None = None


@attrs.frozen
class RowSucceeded:
    """One recipient row was issued its credential."""

    TYPE: ClassVar[str] = "row_succeeded"
    row: int
    email: str
    internal: bool


@attrs.frozen
class RowFailed:
    """One recipient row could not be processed."""

    TYPE: ClassVar[str] = "row_failed"
    row: int
    email: str
    error: str


@attrs.frozen
class EmailSent:
    """The notification e-mail for a row went out."""

    TYPE: ClassVar[str] = "email_sent"
    row: int
    email: str


@attrs.frozen
class EmailFailed:
    """The notification e-mail for a row could not be sent."""

    TYPE: ClassVar[str] = "email_failed"
    row: int
    email: str
    error: str


@attrs.frozen
class Succeeded:
    """The job finished; its result is frozen."""

    TYPE: ClassVar[str] = "succeeded"


@attrs.frozen
class Failed:
    """The job gave up; `error` says why."""

    TYPE: ClassVar[str] = "failed"
    error: str


Event: TypeAlias = (
    Created
    | Started
    | ProgressReported
    | RowSucceeded
    | RowFailed
    | EmailSent
    | EmailFailed
    | Succeeded
    | Failed
)
RowEvent: TypeAlias = RowSucceeded | RowFailed
EmailEvent: TypeAlias = EmailSent | EmailFailed

EVENT_CLASSES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        Created,
        Started,
        ProgressReported,
        RowSucceeded,
        RowFailed,
        EmailSent,
        EmailFailed,
        Succeeded,
        Failed,
    )
}
#: Types a worker may append; `created` only comes from job creation.
WORKER_TYPES = frozenset(EVENT_CLASSES) - {Created.TYPE}


@attrs.frozen
class NewEvent:
    """An event on its way into the log, with its idempotency key."""

    event_id: str
    event: Event


@attrs.frozen
class RecordedEvent:
    """An event as the log holds it: where it stands and when it was written."""

    job_id: str
    version: int
    position: int
    event_id: str
    recorded_at: str
    event: Event


def new_event_id() -> str:
    """A fresh idempotency key for an event whose sender did not choose one."""
    return str(uuid.uuid4())


def new_job_id() -> str:
    """A fresh job id for a creation request that did not name one."""
    return str(uuid.uuid4())


def is_valid_job_id(job_id: str) -> bool:
    """Whether `job_id` has the contract's form (1-128 of A-Z a-z 0-9 . _ : -)."""
    return JOB_ID_PATTERN.fullmatch(job_id) is not None


def check_text(field: str, value: str | None, limit: int, *, required: bool = True) -> None:
    """Refuse empty, oversize or NUL-bearing text: a clear error now beats a driver error later."""
    if value is None:
        return
    if required and not value:
        raise InvalidInput(f"{field}: must not be empty")
    if len(value) > limit:
        raise InvalidInput(f"{field}: longer than {limit} characters")
    if "\x00" in value:
        raise InvalidInput(f"{field}: must not contain NUL characters")


def check_count(field: str, value: int | None) -> None:
    """Refuse negative or out-of-range counts."""
    if value is None:
        return
    if value < 0:
        raise InvalidInput(f"{field}: must be >= 0, got {value}")
    if value > MAX_INT:
        raise InvalidInput(f"{field}: must be <= {MAX_INT}")


def check_event_id(field: str, event_id: str) -> None:
    """Refuse an event id the log could not store or compare reliably."""
    check_text(field, event_id, MAX_EVENT_ID)


def check_fields(event: Event, prefix: str = "") -> None:
    """Raise `InvalidInput` naming the first field of `event` that breaks its own rules."""
    for field in attrs.fields(type(event)):
        value = getattr(event, field.name)
        name = prefix + field.name
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            check_count(name, value)
        elif isinstance(value, str):
            limit = _TEXT_LIMITS.get(field.name, MAX_TEXT)
            check_text(name, value, limit, required=field.name not in OPTIONAL_TEXT)
    if isinstance(event, ProgressReported) and event.current > event.total:
        raise InvalidInput(
            f"{prefix}current: {event.current} is greater than total {event.total}"
        )


# The rules of `check_fields`, spelled out per class: a yes/no per event with no loop, no call
# and no message, for the fold's hot path. A property test holds the two to the same answers.
FIELDS_OK: dict[type, Callable[[Any], bool]] = {
    Created: lambda e: 0 < len(e.owner) <= MAX_EVENT_ID and "\x00" not in e.owner
    and (e.total is None or 0 <= e.total <= MAX_INT)
    and (e.label is None or (len(e.label) <= MAX_LABEL and "\x00" not in e.label)),
    Started: lambda e: True,
    ProgressReported: lambda e: 0 <= e.current <= e.total <= MAX_INT
    and (e.status is None or (len(e.status) <= MAX_TEXT and "\x00" not in e.status)),
    RowSucceeded: lambda e: 0 <= e.row <= MAX_INT
    and 0 < len(e.email) <= MAX_EMAIL and "\x00" not in e.email,
    RowFailed: lambda e: 0 <= e.row <= MAX_INT
    and 0 < len(e.email) <= MAX_EMAIL and "\x00" not in e.email
    and 0 < len(e.error) <= MAX_TEXT and "\x00" not in e.error,
    EmailSent: lambda e: 0 <= e.row <= MAX_INT
    and 0 < len(e.email) <= MAX_EMAIL and "\x00" not in e.email,
    EmailFailed: lambda e: 0 <= e.row <= MAX_INT
    and 0 < len(e.email) <= MAX_EMAIL and "\x00" not in e.email
    and 0 < len(e.error) <= MAX_TEXT and "\x00" not in e.error,
    Succeeded: lambda e: True,
    Failed: lambda e: 0 < len(e.error) <= MAX_TEXT and "\x00" not in e.error,
}


def fields_ok(event: Event) -> bool:
    """Whether `check_fields` would pass, without building any message: the fold's fast path."""
    try:
        return FIELDS_OK[type(event)](event)
    except (KeyError, TypeError):
        return False  # not an event, or ill-typed fields: `check_fields` has the last word
