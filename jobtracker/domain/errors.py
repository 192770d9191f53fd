"""The one error root; every failure a caller can act on has a class of its own.

The classes say what went wrong, not how to answer it: `server/errors.py` maps them to HTTP in
one place.
"""

from __future__ import annotations


class JobtrackerError(Exception):
    """Root of every error jobtracker raises on purpose; `detail` is safe to show a client."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(JobtrackerError):
    """The request is well-formed but a value in it is not acceptable (names the field)."""


class MalformedRequest(JobtrackerError):
    """The request body cannot be read at all (not JSON, wrong top-level shape)."""


class PayloadTooLarge(JobtrackerError):
    """The request is over a configured size limit."""


class UnsupportedEncoding(JobtrackerError):
    """The request body comes in a content coding the server does not read."""


class RequestTimeout(JobtrackerError):
    """The client did not send the request's body in time (a slow or stalled client)."""


class NotAuthenticated(JobtrackerError):
    """No API key, or one that is unknown or revoked."""


class AccessDenied(JobtrackerError):
    """The key is valid but may not touch this job."""


class JobNotFound(JobtrackerError):
    """No job has this id (or the id is malformed)."""

    def __init__(self, detail: str = "Job not found") -> None:
        super().__init__(detail)


class JobExpired(JobtrackerError):
    """The job finished long ago and retention removed it; only its tombstone remains."""

    def __init__(self, detail: str = "Job expired") -> None:
        super().__init__(detail)


class Conflict(JobtrackerError):
    """The request contradicts what the log already holds; nothing was written."""


class JobFinished(Conflict):
    """The job is SUCCESS or FAILURE; terminal states never change."""


class RowAlreadyReported(Conflict):
    """A row (or its e-mail) already has its one outcome."""


class RowsExceedTotal(Conflict):
    """More row outcomes than the total the job was created with."""


class JobIdTaken(Conflict):
    """Another API key already owns a job with this id."""


class EventIdReused(Conflict):
    """An event id already names another event (in the log, or earlier in the same batch)."""


class Cancelled(JobtrackerError):
    """The job's owner asked it to stop: leave the job block (which records FAILURE Cancelled)."""


class StoreUnavailable(JobtrackerError):
    """The store could not be reached or answered with a driver error; safe to retry."""


class ConfigError(JobtrackerError):
    """A setting (store URL, limit) is not usable."""


class UnreadableLog(JobtrackerError):
    """The log holds something this version cannot read or fold back (newer schema, a gap)."""
