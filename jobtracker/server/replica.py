"""GETs from a PostgreSQL read replica, with read-your-writes kept by the job's version.

`serve --read-url` (JOBTRACKER_READ_URL) names a streaming-replication standby of the store's
database. `GET /api/v1/jobs/{job_id}` then reads the job there; everything else (every write, the
keys, held `?wait=` requests, tombstones) stays on the primary. A standby lags a little, so a
client that just appended sends `?min_version=N`, N being the `version` its append was answered
with: the replica answers only once its copy of the job has reached N, looked at again every
`POLL_SECONDS` for up to `PATIENCE_SECONDS`, and then the primary answers. A poller's
`If-None-Match: "N"` is a floor the same way, so its job never seems to go back. Without either,
the replica answers what it has, which may be a moment old: that is what a replica is.

A standby that cannot be reached (down, restarting, refusing connections) is skipped: the primary
answers, and the log says once when the replica stopped answering and once when it came back.

A job the replica does not have is read from the primary: it may be one created a moment ago
(a job is durable before its id is returned, so a fresh id must never be 404), or none at all,
which only the primary (and its tombstones) can say.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from jobtracker.domain import paging
from jobtracker.domain.errors import ConfigError, InvalidInput, StoreUnavailable
from jobtracker.domain.events import MAX_INT
from jobtracker.server.common import STORE
from jobtracker.store.base import JobView
from jobtracker.store.url import parse_store_url

if TYPE_CHECKING:
    from jobtracker.store.postgres.replica import PostgresReplica

REPLICA: web.AppKey[PostgresReplica] = web.AppKey("jobtracker_read_replica")
MIN_VERSION = "min_version"
#: How often a replica behind the wanted version is read again, and for how long in all before
#: the primary answers instead: local streaming replication catches up in about a millisecond.
POLL_SECONDS = 0.002
PATIENCE_SECONDS = 0.1

#: Reads a job's view: (job id, row errors to include) -> the view, or None when there is none.
JobRead = Callable[[str, int], Awaitable[JobView | None]]


def check_read_url(store_url: str, read_url: str | None) -> None:
    """Refuse a read URL that is not PostgreSQL, or one beside a store that is not."""
    if read_url is None:
        return
    if parse_store_url(read_url).kind != "postgresql":
        raise ConfigError("--read-url must be a postgresql:// URL (a standby of the store)")
    if parse_store_url(store_url).kind != "postgresql":
        raise ConfigError("--read-url needs a postgresql:// store: replicas are PostgreSQL's")


def replica_context(read_url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's cleanup context for the replica: opened at startup, closed at cleanup."""

    async def open_and_close(app: web.Application) -> AsyncIterator[None]:
        # Imported here so SQLite-only users never load (or need) the PostgreSQL driver.
        from jobtracker.store.postgres.replica import PostgresReplica

        replica = PostgresReplica(read_url)
        await replica.open()
        app[REPLICA] = replica
        yield
        await replica.close()

    return open_and_close


def min_version(request: web.Request) -> int:
    """`?min_version=N` (0 when absent); 422 naming it when not a whole number >= 0."""
    if not request.query_string:
        return 0
    raw = request.query.get(MIN_VERSION)
    if raw is None:
        return 0
    value = paging.ascii_int(raw)
    if value is None or not 0 <= value <= MAX_INT:
        raise InvalidInput(f"{MIN_VERSION}: must be a whole number, 0 or more: the version an "
                           "append was answered with")
    return value


def job_read(request: web.Request) -> JobRead:
    """How this GET reads its job: from the replica when there is one, no older than the floor
    (`min_version`, or the version an `If-None-Match` names), else from the primary.

    Called before anything is read, so a bad `min_version` is refused whatever the job."""
    wanted = min_version(request)
    primary = request.app[STORE].get_job
    replica = request.app.get(REPLICA)
    if replica is None:
        return primary
    floor = max(wanted, _tag_version(request.headers.get("If-None-Match")))

    async def read(job_id: str, errors_limit: int) -> JobView | None:
        try:
            view = await _replica_view(replica, job_id, errors_limit, floor)
        except StoreUnavailable as exc:
            # A standby that is down or restarting must not take GETs down with it.
            replica.note_failure(exc.detail)
            view = None
        else:
            replica.note_success()
        return view if view is not None else await primary(job_id, errors_limit)

    return read


async def _replica_view(
    replica: PostgresReplica, job_id: str, errors_limit: int, floor: int
) -> JobView | None:
    """The replica's view once it is at `floor` or past it; None if it is not there in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PATIENCE_SECONDS
    while True:
        view = await replica.get_job(job_id, errors_limit)
        if view is None or view.state.version >= floor:
            return view
        if loop.time() >= deadline:
            return None
        await asyncio.sleep(POLL_SECONDS)


def _tag_version(if_none_match: str | None) -> int:
    """The highest version among `If-None-Match`'s tags (ours are `"N"`); 0 for none or `*`."""
    if not if_none_match:
        return 0
    versions = (paging.ascii_int(tag.strip().removeprefix("W/").strip('"'))
                for tag in if_none_match.split(","))
    return max((v for v in versions if v is not None and 0 <= v <= MAX_INT), default=0)
