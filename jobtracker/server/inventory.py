"""Inventory (CONTRACT.md, "Inventory"): `GET /api/v1/jobs`, and retention in the background.

Listing answers a key's own jobs only: the store is asked for the calling key's jobs, whatever
the query or its page token says, so no parameter can reach another key's jobs.

Retention runs in every server that has `--retention`: it prunes a batch, rests, and goes on
until nothing is due, then looks again a minute later. Every server, with retention or not,
watches the store's tombstones to forget the finished bodies and owners it holds of pruned jobs,
whoever pruned them (another server, `jobtracker prune`), and the store's replay swaps to forget
the bodies it holds of jobs a replay may have repaired (`jobtracker replay`, which runs beside
the servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from typing import Protocol

from aiohttp import web

from jobtracker.domain.errors import JobtrackerError
from jobtracker.server.common import FINISHED, GATE, OWNERS, STORE, json_response, request_key
from jobtracker.server.replica import REPLICA
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.listing import list_page
from jobtracker.store.retention import prune_all

log = logging.getLogger(__name__)

#: Seconds between two prune batches: appends get the writer in between.
BATCH_PAUSE = 0.05
#: Seconds between two looks for due jobs once a prune found none.
IDLE_PAUSE = 60.0


async def list_jobs(request: web.Request) -> web.Response:
    """`GET /api/v1/jobs`: the calling key's jobs, newest first, filtered, a page at a time."""
    key = await request_key(request)
    query = request.query
    params = {name: query.getall(name) for name in query}
    return json_response(await list_page(request.app[STORE], key.key_id, params))


class Retention:
    """The server's background part of retention: prune (when configured) and forget."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        forget: Callable[[str], None],
        forget_replayed: Callable[[str | None], None],
        swaps_from: Callable[[], SwapsSource] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._forget = forget
        self._forget_replayed = forget_replayed
        self._swaps_from = swaps_from or (lambda: store)
        self._seen = 0
        self._swaps_seen = 0

    async def start(self) -> list[asyncio.Task[None]]:
        """Skip the tombstones and swaps already there (nothing of them is held yet), whatever
        their number (a year of retention leaves millions); start the loops."""
        self._seen, self._swaps_seen = await self._store.forget_cursors()
        tasks = [asyncio.create_task(self._watch(), name="jobtracker-tombstones")]
        if self._settings.retention is not None:
            tasks.append(asyncio.create_task(self._prune(), name="jobtracker-retention"))
        return tasks

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._settings.tombstone_interval)
            with contextlib.suppress(JobtrackerError):
                await self.forget_pruned()
                await self.forget_replayed()

    async def forget_pruned(self) -> None:
        """Forget every job pruned since the last look."""
        while pruned := await self._store.pruned_since(self._seen):
            for _, job_id in pruned:
                self._forget(job_id)
            self._seen = pruned[-1][0]

    async def forget_replayed(self) -> None:
        """Forget the bodies held of every job replayed since the last look."""
        while swaps := await self._swaps_from().swaps_since(self._swaps_seen):
            for _, job_id in swaps:
                self._forget_replayed(job_id)
            self._swaps_seen = swaps[-1][0]

    async def _prune(self) -> None:
        assert self._settings.retention is not None
        keep = dt.timedelta(seconds=self._settings.retention)
        while True:
            try:
                jobs, events = await prune_all(
                    self._store, dt.datetime.now(dt.UTC) - keep, self._settings.prune_batch,
                    BATCH_PAUSE,
                )
            except JobtrackerError as exc:  # the store is down: try again later
                log.warning("retention: prune failed: %s", exc.detail)
            else:
                if jobs:
                    log.info("retention: pruned %d jobs (%d events)", jobs, events)
                    await self.forget_pruned()
            await asyncio.sleep(IDLE_PAUSE)


def forgetter(app: web.Application) -> Callable[[str], None]:
    """What a server forgets of a pruned job: its finished body and its owner."""

    def forget(job_id: str) -> None:
        app[FINISHED].forget(job_id)
        app[OWNERS].forget(job_id)

    return forget


class SwapsSource(Protocol):
    """Where replay swaps are read: the store, or the standby GETs are read from."""

    async def swaps_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str | None]]:
        """See `Store.swaps_since`."""


def swaps_source(app: web.Application) -> Callable[[], SwapsSource]:
    """Where this server reads replay swaps: from the standby it reads GETs from, while that
    answers. A swap's row commits with the rows it repaired, so a standby that shows the swap
    shows the repair; read from the primary, the bodies dropped could be read again from a
    standby that had not replayed it yet, and held."""

    def source() -> SwapsSource:
        replica = app.get(REPLICA)
        return app[STORE] if replica is None or replica.failing else replica

    return source


def replay_forgetter(app: web.Application) -> Callable[[str | None], None]:
    """What a server forgets of the jobs a replay made live (None: of every job): the bodies and
    owners it holds, all read from the projection the replay replaced."""

    def forget(job_id: str | None) -> None:
        app[FINISHED].forget_replayed(job_id)
        app[GATE].forget_replayed(job_id)
        app[OWNERS].forget_replayed(job_id)

    return forget
