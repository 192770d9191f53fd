"""What a job looks like after folding its events: status, progress and result counters."""

from __future__ import annotations

import enum
from typing import Literal, NamedTuple

import attrs


class Status(enum.StrEnum):
    """A job's status; the names are the seed API's, byte for byte."""

    #: Created and recorded; no worker has reported yet.
    PENDING = "PENDING"
    #: A worker said it began.
    STARTED = "STARTED"
    #: A worker reported progress, a row or an e-mail.
    PROGRESS = "PROGRESS"
    #: Finished; the result is frozen.
    SUCCESS = "SUCCESS"
    #: Gave up; `error` says why.
    FAILURE = "FAILURE"

    @property
    def is_terminal(self) -> bool:
        """Whether this status never changes again."""
        return self in (Status.SUCCESS, Status.FAILURE)


@attrs.frozen
class Progress:
    """A progress report as the seed shows it."""

    current: int
    total: int
    status: str | None = None


@attrs.frozen
class JobState:
    """The fold's output for one job: everything a GET needs except the error list."""

    job_id: str
    owner: str
    status: Status
    version: int
    label: str | None = None
    expected_total: int | None = None
    progress: Progress | None = None
    successful: int = 0
    failed: int = 0
    internal_count: int = 0
    external_count: int = 0
    emails_sent: int = 0
    emails_failed: int = 0
    error: str | None = None
    #: The owner asked the job to stop; its worker hears it on its next report.
    cancel_requested: bool = False

    @property
    def rows_processed(self) -> int:
        """Rows with an outcome: the seed's `result.total`."""
        return self.successful + self.failed


RowKind = Literal["outcome", "email"]


# RowMark and RowError are NamedTuples, not attrs classes: replay makes one per row event, a
# million per large job, and a tuple is built, hashed and compared in C several times faster.
class RowMark(NamedTuple):
    """A row that already has its one outcome (or its one e-mail outcome)."""

    row: int
    kind: RowKind


class RowError(NamedTuple):
    """One entry of the seed's `result.errors`."""

    row: int
    email: str
    error: str
