"""Job control: when a job that nobody finished must be ended, and how. Pure.

The reaper (`server/reaper.py`) reads the jobs whose next check is due (`Deadline`) and asks
`decide` what to do with each: end it with a server-written `failed` event (`Reap`), look again
later (`Recheck`), or stop watching it (`Forget`). The store keeps one row per watched job whose
`next_check` is a lower bound of the moment it can be due, so a sweep costs O(jobs due), not
O(jobs); being early costs one more look, never a wrong reaping.

Ending events get ids derived from the job and the reason: two servers reaping the same job write
the same event, which the log records once (a re-send), and replay reproduces it like any event.
"""

from __future__ import annotations

import hashlib

import attrs

from jobtracker.domain.errors import JobFinished
from jobtracker.domain.events import Failed
from jobtracker.domain.state import JobState, Status

#: How long a running job asked to cancel has to stop by itself before the server ends it.
DEFAULT_CANCEL_GRACE = 60.0
#: How long a heartbeat may wait in a server's memory before it reaches the store: a job is only
#: found lost once it has gone this much longer than its heartbeat timeout without a report.
HEARTBEAT_FLUSH = 1.0
CANCELLED = "Cancelled"
#: When a PENDING job with no timeout is looked at again (a backstop, not a limit): its start
#: brings its next check forward by itself.
PENDING_RECHECK = 86_400.0


@attrs.frozen
class Deadline:
    """What the store knows of a watched job whose check is due (times in epoch seconds)."""

    job_id: str
    #: None when the job is gone (it never is today; a pruned job will be).
    status: Status | None
    cancel_requested: bool
    heartbeat_timeout: int
    timeout: int | None
    timeout_at: float | None
    #: The newest heartbeat the store has heard of, and when the job's newest event was written.
    heartbeat_at: float | None
    last_event_at: float | None
    #: When the cancel was requested (the `cancel_requested` event's time), if it was.
    cancel_at: float | None = None


@attrs.frozen
class Reap:
    """End the job now with this event."""

    event_id: str
    event: Failed


@attrs.frozen
class Recheck:
    """Nothing is due yet: look again at `at`."""

    at: float


@attrs.frozen
class Forget:
    """The job is finished (or gone): stop watching it."""


Verdict = Reap | Recheck | Forget


def ending_event_id(job_id: str, reason: str) -> str:
    """The id of the `failed` event that ends `job_id` for `reason` (the same on every server)."""
    digest = hashlib.sha256(job_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"jobtracker:{reason}:{digest}"


def cancel_event_id(job_id: str) -> str:
    """The id of a job's `cancel_requested` event: asking twice records it once."""
    return ending_event_id(job_id, "cancel_requested")


def ending(job_id: str, reason: str, error: str) -> Reap:
    """The server-written end of a job."""
    return Reap(ending_event_id(job_id, reason), Failed(error=error, reason=reason))


def cancelled(job_id: str) -> Reap:
    """The end of a cancelled job."""
    return ending(job_id, "cancelled", CANCELLED)


def decide(
    job: Deadline, now: float, *, cancel_grace: float = DEFAULT_CANCEL_GRACE,
    flush: float = HEARTBEAT_FLUSH,
) -> Verdict:
    """What to do with a watched job at `now`: the earliest limit that has passed ends it."""
    if job.status is None or job.status.is_terminal:
        return Forget()
    limits: list[tuple[float, Reap]] = []
    if job.timeout_at is not None:
        limits.append((job.timeout_at, ending(
            job.job_id, "timed_out", f"Timed out after {job.timeout} s")))
    if job.cancel_requested:
        asked = job.cancel_at if job.cancel_at is not None else now
        limits.append((asked + cancel_grace, cancelled(job.job_id)))
    if job.status in (Status.STARTED, Status.PROGRESS):
        heard = max(job.last_event_at or 0.0, job.heartbeat_at or 0.0)
        limits.append((heard + job.heartbeat_timeout + flush, ending(
            job.job_id, "worker_lost", f"Worker lost: no report for {job.heartbeat_timeout} s")))
    due = [(at, reap) for at, reap in limits if at <= now]
    if due:
        return min(due, key=lambda pair: pair[0])[1]
    # A PENDING job can only time out: the store moves its next check forward the moment it
    # leaves PENDING (a trigger in the SQL stores), so no periodic look is needed.
    return Recheck(min([at for at, _ in limits], default=now + PENDING_RECHECK))


def refuse_finished(state: JobState) -> None:
    """Heartbeats and cancels are for jobs still running: 409 on a finished one."""
    if state.status.is_terminal:
        raise JobFinished(f"Job {state.job_id} is already {state.status.value}")


def first_check(created_at: float, heartbeat_timeout: int, timeout: int | None) -> float:
    """When a new job's watch first looks at it."""
    first = created_at + heartbeat_timeout
    return first if timeout is None else min(first, created_at + timeout)
