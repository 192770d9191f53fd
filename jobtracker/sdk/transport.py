"""How the worker SDK reaches the log (internal to the SDK): the two protocols every way of
reaching it implements, and what a new job is asked with.

The ways are `sdk/http.py` (a server's API) and `sdk/direct.py` (straight into a store). Every
transport answers with our own errors: a refusal the server or store made (4xx) keeps its class
and its `detail`; anything worth retrying (a dropped connection, a timeout, a 5xx, a busy
database) is `StoreUnavailable`, the one class `worker.py` retries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
import orjson

from jobtracker.domain.errors import (
    AccessDenied,
    Conflict,
    InvalidInput,
    JobExpired,
    JobNotFound,
    JobtrackerError,
    MalformedRequest,
    NotAuthenticated,
    PayloadTooLarge,
    StoreUnavailable,
)
from jobtracker.domain.events import NewEvent
from jobtracker.sdk.follow import Snapshot
from jobtracker.store.base import AppendResult

#: The error class each refusal status maps back to (the inverse of `web.HTTP_STATUS`).
ERROR_FOR_STATUS: dict[int, type[JobtrackerError]] = {
    400: MalformedRequest,
    401: NotAuthenticated,
    403: AccessDenied,
    404: JobNotFound,
    409: Conflict,
    410: JobExpired,
    413: PayloadTooLarge,
    422: InvalidInput,
}


@attrs.frozen
class NewJob:
    """What a job is created with; only `job_id` is required."""

    job_id: str
    total: int | None = None
    label: str | None = None
    heartbeat_timeout: int | None = None
    timeout: int | None = None
    #: The owner key id a worker key creates the job for (None: the key's own default).
    owner: str | None = None
    #: Labels to find the job by (`tracker.list_jobs(labels=...)`).
    labels: Mapping[str, str] | None = None


class Transport(Protocol):
    """What the synchronous SDK needs from a way of reaching the log."""

    def create_job(self, job: NewJob) -> str:
        """Create the job (idempotent for its owner); return its id."""

    def heartbeat(self, job_id: str) -> bool:
        """Say the job's worker is alive; whether its owner asked it to stop."""

    def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Append one batch atomically."""

    def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """The job's body; held up to `wait` s while its ETag is still `etag`."""

    def list_page(self, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """One page of the key's jobs, as `GET /api/v1/jobs` with these parameters answers."""

    def close(self) -> None:
        """Release connections."""


class AsyncTransport(Protocol):
    """What the asyncio SDK needs from a way of reaching the log."""

    async def create_job(self, job: NewJob) -> str:
        """Create the job (idempotent for its owner); return its id."""

    async def heartbeat(self, job_id: str) -> bool:
        """Say the job's worker is alive; whether its owner asked it to stop."""

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Append one batch atomically."""

    async def fetch(self, job_id: str, etag: str | None, wait: int) -> Snapshot:
        """The job's body; held up to `wait` s while its ETag is still `etag`."""

    async def list_page(self, params: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """One page of the key's jobs, as `GET /api/v1/jobs` with these parameters answers."""

    async def close(self) -> None:
        """Release connections."""


def error_from_response(status: int, body: bytes) -> JobtrackerError:
    """The error a refused request means, carrying the server's `detail`."""
    try:
        detail = str(orjson.loads(body)["detail"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = body.decode(errors="replace")[:500] or f"HTTP {status}"
    if status >= 500 or status == 429:
        return StoreUnavailable(f"server answered {status}: {detail}")
    return ERROR_FOR_STATUS.get(status, JobtrackerError)(detail)


