"""`TrackedTask`: a Celery task base whose job is created at publish and kept exact under
retries and redelivery."""

from __future__ import annotations

import contextlib
from typing import Any

from celery import Task  # type: ignore[import-untyped]
from celery.exceptions import Ignore, Reject, Retry  # type: ignore[import-untyped]
from celery.signals import task_revoked  # type: ignore[import-untyped]
from celery.utils import uuid  # type: ignore[import-untyped]

from jobtracker.celery.config import event_ids_for, tracker_for
from jobtracker.domain.errors import (
    AccessDenied,
    Cancelled,
    Conflict,
    InvalidInput,
    JobNotFound,
    JobtrackerError,
    NotAuthenticated,
)
from jobtracker.sdk.recording import failure_text
from jobtracker.sdk.worker import Job

#: What a task raises when Celery will run it again: the job must not end.
GOES_ON = (Retry, Reject, Ignore)
#: The worker process going away (a revoke's SIGTERM, a cold shutdown): the revoke handler, a
#: redelivery or the reaper ends the job, not this dying attempt.
PROCESS_EXIT = (SystemExit, KeyboardInterrupt)
#: Refusals a retry would only repeat (and a cancel asked for): never auto-retried.
FINAL = (Cancelled, Conflict, InvalidInput, AccessDenied, JobNotFound, NotAuthenticated)


class TrackedTask(Task):  # type: ignore[misc]
    """A task whose job (id: the task id) is created when it is published and reported on while
    it runs: `self.job` is the running attempt's `jobtracker.sdk.worker.Job`.

    Task options (`@app.task(base=TrackedTask, track_total=..., ...)`): `track_total`, an int
    or a callable on the task's arguments; `track_owner`, a callable on the arguments giving
    the owner key id a worker key creates the job for (or `jobtracker_owner=` to
    `apply_async`); `track_heartbeat_timeout` and `track_timeout`, the job's limits in seconds.
    """

    abstract = True
    track_total: Any = None
    track_owner: Any = None
    track_heartbeat_timeout: int | None = None
    track_timeout: int | None = None
    dont_autoretry_for = FINAL

    @property
    def job(self) -> Job:
        """The running attempt's job handle."""
        job: Job | None = getattr(self.request, "jobtracker_job", None)
        if job is None:
            raise RuntimeError(f"{self.name} is not running as a tracked task")
        return job

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        """Create the job (PENDING), then publish; a failed publish ends the job FAILURE."""
        owner = options.pop("jobtracker_owner", None)
        if task_id is not None and task_id == self.request.id:
            # The running task re-publishing itself (a retry): its job exists and goes on.
            return super().apply_async(args, kwargs, task_id, **options)
        task_id = task_id or uuid()
        tracker = tracker_for(self.app)
        tracker.create_job(
            job_id=task_id,
            total=self._option("track_total", args, kwargs),
            owner=owner or self._option("track_owner", args, kwargs),
            heartbeat_timeout=self.track_heartbeat_timeout,
            timeout=self.track_timeout,
        )
        try:
            return super().apply_async(args, kwargs, task_id, **options)
        except Exception as exc:
            with tracker.job(task_id) as job:
                job.failed(f"Publishing the task failed: {failure_text(exc)}")
            raise

    def _option(self, name: str, args: Any, kwargs: Any) -> Any:
        # Read off the class: a function stored as a task option is not a method of the task.
        value = getattr(type(self), name)
        return value(*(args or ()), **(kwargs or {})) if callable(value) else value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task inside its job: started, then succeeded on return, failed when it raises
        for good; nothing terminal when Celery will run it again."""
        task_id = self.request.id
        if task_id is None:  # called as a plain function
            return super().__call__(*args, **kwargs)
        job = tracker_for(self.app).job(
            task_id,
            heartbeat_timeout=self.track_heartbeat_timeout,
            event_ids=event_ids_for(task_id),
        )
        self.request.jobtracker_job = job
        job.__enter__()
        try:
            job.started()
            result = super().__call__(*args, **kwargs)
            if not job.finished:
                job.succeeded()
        except GOES_ON:
            job.__exit__(None, None, None)
            raise
        except PROCESS_EXIT:
            with contextlib.suppress(JobtrackerError):
                job.__exit__(None, None, None)
            raise
        except BaseException as exc:
            job.__exit__(type(exc), exc, exc.__traceback__)
            raise
        job.__exit__(None, None, None)
        return result


def _end_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    """A revoked tracked task's job ends FAILURE `Cancelled` (its process may be gone)."""
    if not isinstance(sender, TrackedTask) or request is None or request.id is None:
        return
    with contextlib.suppress(JobtrackerError), tracker_for(sender.app).job(request.id) as job:
        job._end_with(Cancelled("revoked"))


def listen_for_revokes() -> None:
    """Connect `_end_revoked` to Celery's `task_revoked` signal (once)."""
    task_revoked.connect(_end_revoked, weak=False, dispatch_uid="jobtracker-revoked")
