"""How a `JobState` maps to the columns of the `jobs` table, and the job states a writer
remembers from its own commits (shared by the SQL stores)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from jobtracker.domain.state import JobState, Progress, Status

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
    "cancel_requested",
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
        state.cancel_requested,
    )


def state_from_row(row: Sequence[Any]) -> JobState:
    """The inverse of `state_to_row`."""
    (job_id, owner, status, version, label, expected_total, p_current, p_total, p_status,
     successful, failed, internal_count, external_count, emails_sent, emails_failed, error,
     cancel_requested) = row
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
        cancel_requested=bool(cancel_requested),
    )


class Remembered:
    """Job states a writer's own commits left, newest last, at most `most` of them.

    They let the next group for a job be planned without reading the job first. Each store says
    when they still hold: PostgreSQL's write checks each job's version under its row lock, so a
    state another process moved on from costs one redo; SQLite's `KnownStates` forgets them all
    as soon as anything else has written.
    """

    def __init__(self, most: int = 10_000) -> None:
        self._most = most
        self._states: dict[str, JobState] = {}

    def states(self, job_ids: Iterable[str]) -> dict[str, JobState]:
        """The remembered states of those of `job_ids` we have one for."""
        return {job_id: self._states[job_id] for job_id in job_ids if job_id in self._states}

    def keep(self, states: dict[str, JobState]) -> None:
        """Remember what a commit left (the oldest go past `most`)."""
        for job_id, state in states.items():
            self._states.pop(job_id, None)
            self._states[job_id] = state
        while len(self._states) > self._most:
            del self._states[next(iter(self._states))]

    def forget(self, job_ids: Iterable[str]) -> None:
        """Drop these jobs: a write for them failed or found them moved on."""
        for job_id in job_ids:
            self._states.pop(job_id, None)

    def clear(self) -> None:
        """Drop everything."""
        self._states.clear()
