"""The events workers append, as frozen value classes with stable wire names.

Names are past tense: an event is a fact that already happened. `check_fields` holds the rules a
single event must meet on its own; rules that depend on the job's history live in `projection.py`.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple, TypeAlias

import attrs

from jobtracker.domain.errors import InvalidInput

#: Largest integer we accept anywhere: exact in JSON doubles, fits every store's BIGINT.
MAX_INT = 2**53 - 1
MAX_EMAIL = 320
MAX_TEXT = 4000
MAX_EVENT_ID = 128
MAX_LABEL = 200
_TEXT_LIMITS = {"email": MAX_EMAIL, "label": MAX_LABEL, "owner": MAX_EVENT_ID}
#: Free text that may be empty.
OPTIONAL_TEXT = frozenset({"status", "label"})
#: A job id; never a whole `.` or `..`, which URL resolution (RFC 3986) would remove from a path.
JOB_ID_PATTERN = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._:-]{1,128}")
#: Seconds a running job may go without an event or a heartbeat: allowed range and default.
HEARTBEAT_TIMEOUT_RANGE = (5, 86_400)
DEFAULT_HEARTBEAT_TIMEOUT = 600
#: Seconds from creation a job may take to finish, when it has a timeout at all.
TIMEOUT_RANGE = (1, 31_536_000)
#: Why the server ended a job (`failed.reason`); a worker may say `cancelled` too.
FAILURE_REASONS = frozenset({"worker_lost", "timed_out", "cancelled"})
#: A job's labels (CONTRACT.md, "Inventory"): at most 16 pairs, keys of this pattern, values of
#: 1-256 characters without NUL.
MAX_LABELS = 16
MAX_LABEL_VALUE = 256
LABEL_KEY_PATTERN = re.compile(r"[a-z0-9_.-]{1,63}")
#: Labels as the domain holds them: (key, value) pairs sorted by key, hashable like every event.
LabelPairs: TypeAlias = tuple[tuple[str, str], ...]


def label_pairs(labels: Any) -> LabelPairs | None:
    """Labels from a mapping or pairs, sorted by key; None (no labels) for None or nothing."""
    if labels is None:
        return None
    pairs = tuple(sorted(labels.items() if isinstance(labels, dict) else labels))
    return pairs or None


def labels_ok(pairs: LabelPairs) -> bool:
    """Whether `pairs` keep the label rules (the fold's quick yes/no; `check_labels` says why)."""
    return len(pairs) <= MAX_LABELS and all(
        key.__class__ is str and LABEL_KEY_PATTERN.fullmatch(key) is not None
        and value.__class__ is str and 0 < len(value) <= MAX_LABEL_VALUE and "\x00" not in value
        for key, value in pairs
    )


def check_labels(field: str, labels: Any) -> None:
    """Refuse labels that break a rule, naming the first label at fault."""
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise InvalidInput(f"{field}: must be an object of text values")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(f"{field}: at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_PATTERN.fullmatch(key):
            raise InvalidInput(
                f"{field}: key {str(key)[:70]!r} must be 1-63 characters of a-z 0-9 _ . -"
            )
        if not isinstance(value, str):
            raise InvalidInput(f"{field}.{key}: must be a string")
        check_text(f"{field}.{key}", value, MAX_LABEL_VALUE)


@attrs.frozen
class Created:
    """The job exists; written by job creation, never by workers."""

    TYPE: ClassVar[str] = "created"
    owner: str
    total: int | None = None
    label: str | None = None
    #: Seconds a running job may go without a report before it is failed as `worker_lost`.
    heartbeat_timeout: int | None = None
    #: Seconds from creation the job may take before it is failed as `timed_out`.
    timeout: int | None = None
    #: The owner's labels for finding the job again (`GET /api/v1/jobs?label=key:value`).
    labels: LabelPairs | None = attrs.field(default=None, converter=label_pairs)


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
    #: Set when the job did not fail by its worker's own account: one of `FAILURE_REASONS`.
    reason: str | None = None


@attrs.frozen
class CancelRequested:
    """The owner asked a running job to stop; written by the server, never by workers."""

    TYPE: ClassVar[str] = "cancel_requested"


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
    | CancelRequested
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
        CancelRequested,
    )
}
#: Types a worker may append; `created` only comes from job creation, `cancel_requested` from
#: the owner's cancel.
WORKER_TYPES = frozenset(EVENT_CLASSES) - {Created.TYPE, CancelRequested.TYPE}


# A NamedTuple, not an attrs class, like `RowMark`: the SDK makes one per reported row, and a
# tuple is built in C (`tuple.__new__(NewEvent, (event_id, event))` on the hot path).
class NewEvent(NamedTuple):
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


def _uuid7_head() -> str:
    """The first 15 characters of a version-7 UUID (RFC 9562) made now: milliseconds, version."""
    ts = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    return f"{ts[:8]}-{ts[8:12]}-7"


def new_event_id() -> str:
    """A fresh idempotency key: a time-ordered (version 7) UUID, its random part from `os.urandom`.

    Time-ordered because the log keeps a unique index on event ids: ids that grow with time land
    at the index's right edge, so a commit writes a page or two of it instead of one random page
    per event (and the index stays compact). 74 random bits per millisecond keep ids from
    different workers apart.
    """
    return new_event_ids(1)[0]


def new_event_ids(count: int) -> list[str]:
    """`count` fresh event ids at once: one random draw for the batch, then a counter.

    RFC 9562's "monotonic random" method: the batch's 74 random bits are drawn once and its ids
    count up from them in the low 48 bits (the first of which start low enough not to wrap), so
    a batch costs one read of randomness and one short format per id. Two batches from different
    workers in the same millisecond collide only if 26 random bits match and their counter
    ranges overlap: about 2^-60 for batches of 1,000. Drawn when asked for, never kept in
    advance: a worker process forked later (Celery, RQ) must not repeat its parent's ids.
    """
    if not 0 <= count <= _COUNTER_SPAN:
        raise ValueError(f"count: {count} ids do not fit one batch")
    random = int.from_bytes(os.urandom(10), "big")  # 80 bits; 74 are used
    rand_a, variant_and_b, start = random >> 68, (random >> 48) & 0x3FFF, random & _COUNTER_MASK
    start %= _COUNTER_SPAN - count + 1
    prefix = f"{_uuid7_head()}{rand_a:03x}-{0x8000 | variant_and_b:04x}-"
    return [f"{prefix}{n:012x}" for n in range(start, start + count)]


_COUNTER_MASK = (1 << 48) - 1
_COUNTER_SPAN = 1 << 48


def new_job_id() -> str:
    """A fresh job id for a creation request that did not name one."""
    return str(uuid.uuid4())


def is_valid_job_id(job_id: str) -> bool:
    """Whether `job_id` has the contract's form (1-128 of A-Z a-z 0-9 . _ : -, not `.` or `..`)."""
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


#: What each declared field type means to `check_fields`: the Python type and whether None is fine.
_KINDS: dict[str, tuple[type, bool]] = {
    "int": (int, False),
    "int | None": (int, True),
    "str": (str, False),
    "str | None": (str, True),
    "bool": (bool, False),
    # checked as a whole by `check_labels` (below)
    "LabelPairs | None": (tuple, True),
}
_KIND_NAMES = {int: "an integer", str: "a string", bool: "true or false"}


#: (field, type, None allowed, text limit, text required) for each field of an event class.
_Rule = tuple[str, type, bool, int, bool]


def _rules(cls: type[Event]) -> tuple[_Rule, ...]:
    return tuple(
        (f.name, *_KINDS[str(f.type)], _TEXT_LIMITS.get(f.name, MAX_TEXT),
         f.name not in OPTIONAL_TEXT)
        for f in attrs.fields(cls)
    )


# Looked up once per class: reading `attrs.fields` for every event of a batch shows on the append
# path. Built at import from the classes above; no I/O.
_RULES = {cls: _rules(cls) for cls in EVENT_CLASSES.values()}


def _check_slowly(name: str, kind: type, value: Any, limit: int, required: bool) -> None:
    """The detailed checks, naming what is wrong with `value`: `check_fields`' slow path."""
    if kind is int and value.__class__ is int:
        check_count(name, value)
    elif kind is str and value.__class__ is str:
        check_text(name, value, limit, required=required)
    else:
        raise InvalidInput(f"{name}: must be {_KIND_NAMES[kind]}")


def check_fields(event: Event, prefix: str = "") -> None:
    """Raise `InvalidInput` naming the first field of `event` that breaks its own rules.

    Types are checked too: the HTTP codec has done so already, but an SDK writing straight into a
    store hands its events over as built, and a `"5"` must not reach the log as a row number.
    """
    for field, kind, optional, limit, required in _RULES[type(event)]:
        value: Any = getattr(event, field)
        # Exact class: a bool is not a row number. The common case then pays for one comparison;
        # the detailed checks below it name what is wrong.
        cls = value.__class__
        if cls is int:
            if kind is int and 0 <= value <= MAX_INT:
                continue
        elif cls is str:
            if kind is str and value and len(value) <= limit and "\x00" not in value:
                continue
        elif cls is kind or (value is None and optional):
            continue
        _check_slowly(prefix + field, kind, value, limit, required)
    if isinstance(event, ProgressReported) and event.current > event.total:
        raise InvalidInput(
            f"{prefix}current: {event.current} is greater than total {event.total}"
        )
    if isinstance(event, Failed) and event.reason is not None:
        check_reason(f"{prefix}reason", event.reason)
    if isinstance(event, Created):
        check_job_limits(event.heartbeat_timeout, event.timeout, prefix)
        if event.labels is not None:
            check_labels(f"{prefix}labels", dict(event.labels))


def check_reason(field: str, reason: str) -> None:
    """Refuse a failure reason that is not one of `FAILURE_REASONS`."""
    if reason not in FAILURE_REASONS:
        allowed = ", ".join(sorted(FAILURE_REASONS))
        raise InvalidInput(f"{field}: must be one of {allowed}")


def check_job_limits(heartbeat_timeout: int | None, timeout: int | None, prefix: str = "") -> None:
    """Refuse a heartbeat timeout or a timeout outside its range (both in whole seconds)."""
    for field, value, (low, high) in (
        ("heartbeat_timeout", heartbeat_timeout, HEARTBEAT_TIMEOUT_RANGE),
        ("timeout", timeout, TIMEOUT_RANGE),
    ):
        if value is not None and not low <= value <= high:
            raise InvalidInput(f"{prefix}{field}: must be a whole number of seconds "
                               f"from {low} to {high}")


# The rules of `check_fields`, spelled out per class: a yes/no per event with no loop, no call
# and no message, for the fold's hot path. A property test holds the two to the same answers.
FIELDS_OK: dict[type, Callable[[Any], bool]] = {
    Created: lambda e: 0 < len(e.owner) <= MAX_EVENT_ID and "\x00" not in e.owner
    and (e.total is None or 0 <= e.total <= MAX_INT)
    and (e.label is None or (len(e.label) <= MAX_LABEL and "\x00" not in e.label))
    and (e.heartbeat_timeout is None
         or HEARTBEAT_TIMEOUT_RANGE[0] <= e.heartbeat_timeout <= HEARTBEAT_TIMEOUT_RANGE[1])
    and (e.timeout is None or TIMEOUT_RANGE[0] <= e.timeout <= TIMEOUT_RANGE[1])
    and (e.labels is None or labels_ok(e.labels)),
    Started: lambda e: True,
    ProgressReported: lambda e: 0 <= e.current <= e.total <= MAX_INT
    and (e.status is None or (len(e.status) <= MAX_TEXT and "\x00" not in e.status)),
    RowSucceeded: lambda e: 0 <= e.row <= MAX_INT
    and 0 < len(e.email) <= MAX_EMAIL and "\x00" not in e.email and e.internal.__class__ is bool,
    RowFailed: lambda e: 0 <= e.row <= MAX_INT
    and 0 < len(e.email) <= MAX_EMAIL and "\x00" not in e.email
    and 0 < len(e.error) <= MAX_TEXT and "\x00" not in e.error,
    EmailSent: lambda e: 0 <= e.row <= MAX_INT
    and 0 < len(e.email) <= MAX_EMAIL and "\x00" not in e.email,
    EmailFailed: lambda e: 0 <= e.row <= MAX_INT
    and 0 < len(e.email) <= MAX_EMAIL and "\x00" not in e.email
    and 0 < len(e.error) <= MAX_TEXT and "\x00" not in e.error,
    Succeeded: lambda e: True,
    Failed: lambda e: 0 < len(e.error) <= MAX_TEXT and "\x00" not in e.error
    and (e.reason is None or e.reason in FAILURE_REASONS),
    CancelRequested: lambda e: True,
}


def fields_ok(event: Event) -> bool:
    """Whether `check_fields` would pass, without building any message: the fold's fast path."""
    try:
        return FIELDS_OK[type(event)](event)
    except (KeyError, TypeError):
        return False  # not an event, or ill-typed fields: `check_fields` has the last word
