"""How a `JobState` maps to the columns of the `jobs` table (shared by the SQL stores)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobtracker.state import JobState, Progress, Status

#: The `jobs` columns in the order `state_from_row` reads them.
JOB_COLUMNS = (
    "job_id",
    "owner",
    "status",
    "version",
    "label",
    "expected_total",
    "progress_current",
    "progress_total",
    "progress_status",
    "successful",
    "failed",
    "internal_count",
    "external_count",
    "emails_sent",
    "emails_failed",
    "error",
)


def state_to_row(state: JobState) -> tuple[Any, ...]:
    """A state as the values of `JOB_COLUMNS`."""
    progress = state.progress
    return (
        state.job_id,
        state.owner,
        state.status.value,
        state.version,
        state.label,
        state.expected_total,
        progress.current if progress else None,
        progress.total if progress else None,
        progress.status if progress else None,
        state.successful,
        state.failed,
        state.internal_count,
        state.external_count,
        state.emails_sent,
        state.emails_failed,
        state.error,
    )


def state_from_row(row: Sequence[Any]) -> JobState:
    """The inverse of `state_to_row`."""
    (job_id, owner, status, version, label, expected_total, p_current, p_total, p_status,
     successful, failed, internal_count, external_count, emails_sent, emails_failed, error) = row
    progress = None if p_current is None else Progress(p_current, p_total, p_status)
    return JobState(
        job_id=job_id,
        owner=owner,
        status=Status(status),
        version=version,
        label=label,
        expected_total=expected_total,
        progress=progress,
        successful=successful,
        failed=failed,
        internal_count=internal_count,
        external_count=external_count,
        emails_sent=emails_sent,
        emails_failed=emails_failed,
        error=error,
    )
