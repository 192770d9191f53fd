"""Job control over HTTP: heartbeats, cancel, and the reaper that ends lost, late, cancelled jobs.

Every server process runs a reaper. Each sweep reads the watched jobs whose next check is due
(an index range in the store, so its cost follows the jobs due, not the jobs running), asks
`domain/control.decide` about each, and ends the ones that must end with a `failed` event whose
id is derived from the job and the reason: several servers sweeping at once write it once.

Heartbeats are no events: they are kept in memory and written to the store's watch once a second,
one statement for all of them; the reaper allows for that second before it calls a worker lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from aiohttp import web

from jobtracker.domain import control
from jobtracker.domain.errors import Conflict, JobNotFound, JobtrackerError
from jobtracker.domain.events import CancelRequested, NewEvent
from jobtracker.domain.projection import job_body
from jobtracker.domain.state import Status
from jobtracker.server.common import FEED, SETTINGS, STORE, job_for, json_response, request_key
from jobtracker.server.settings import Settings
from jobtracker.store import Store

log = logging.getLogger(__name__)

#: Jobs a sweep reads at once; a sweep that finds this many goes on at once.
SWEEP_BATCH = 100


class Heartbeats:
    """Heartbeats heard by this process since the last flush: the newest per job."""

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}

    def note(self, job_id: str, at: float) -> None:
        """Remember a heartbeat."""
        self._pending[job_id] = at

    async def flush(self, store: Store) -> None:
        """Write what was heard to the store's watch, in one statement."""
        if not self._pending:
            return
        beats, self._pending = self._pending, {}
        try:
            await store.record_heartbeats(beats)
        except JobtrackerError:
            for job_id, at in beats.items():  # keep them for the next try
                self._pending.setdefault(job_id, at)
            raise


class Reaper:
    """Ends the jobs whose limits passed; flushes heartbeats on the way."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        heartbeats: Heartbeats,
        *,
        on_end: Callable[[str], None] = lambda job_id: None,
        on_reaped: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._heartbeats = heartbeats
        self._on_end = on_end
        self._on_reaped = on_reaped

    async def sweep(self, now: float) -> int:
        """One pass over the jobs due at `now`; how many were looked at."""
        due = await self._store.due_deadlines(now, SWEEP_BATCH)
        settled: dict[str, float | None] = {}
        endings = []
        for job in due:
            verdict = control.decide(job, now, cancel_grace=self._settings.cancel_grace)
            if isinstance(verdict, control.Reap):
                endings.append(self._end(job.job_id, verdict))
            settled[job.job_id] = verdict.at if isinstance(verdict, control.Recheck) else None
        # Together, so the store commits them in a group or a few.
        await asyncio.gather(*endings)
        if settled:
            await self._store.settle_deadlines(settled)
        return len(due)

    async def _end(self, job_id: str, reap: control.Reap) -> None:
        try:
            result = await self._store.append(job_id, [NewEvent(reap.event_id, reap.event)])
        except (Conflict, JobNotFound):
            return  # finished meanwhile, by its worker or by another server
        if result.appended:
            reason = reap.event.reason or "unknown"
            log.info("ended job %s: %s", job_id, reap.event.error)
            self._on_reaped(reason)
            self._on_end(job_id)

    async def run(self) -> None:
        """Flush heartbeats and sweep, every `reaper_interval` seconds, until cancelled."""
        interval = self._settings.reaper_interval or 1.0
        while True:
            try:
                await self._heartbeats.flush(self._store)
                if self._settings.reaper_interval:
                    while await self.sweep(time.time()) == SWEEP_BATCH:
                        pass
            except JobtrackerError as exc:
                log.warning("job control: %s", exc.detail)
            await asyncio.sleep(interval)

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Cancel the loop, then write the heartbeats it had not written yet."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(JobtrackerError):
            await self._heartbeats.flush(self._store)


HEARTBEATS = web.AppKey("jobtracker_heartbeats", Heartbeats)


async def heartbeat(request: web.Request) -> web.Response:
    """`POST /api/v1/jobs/{job_id}/heartbeat`: the worker is alive. 204; no event is written."""
    key = await request_key(request)
    view = await job_for(request, key, workers_too=True, with_errors=False)
    control.refuse_finished(view.state)
    request.app[HEARTBEATS].note(view.state.job_id, time.time())
    headers = {"X-Cancel-Requested": "true"} if view.state.cancel_requested else None
    return web.Response(status=204, headers=headers)


async def cancel(request: web.Request) -> web.Response:
    """`POST /api/v1/jobs/{job_id}/cancel` (owner only): a PENDING job ends now; a running one is
    asked to stop and ended after the grace period if it does not. 202 with the job's body."""
    key = await request_key(request)
    view = await job_for(request, key, with_errors=False)
    control.refuse_finished(view.state)
    store, job_id = request.app[STORE], view.state.job_id
    if view.state.status is Status.PENDING:
        ending = control.cancelled(job_id)
        await store.append(job_id, [NewEvent(ending.event_id, ending.event)])
    else:
        grace = request.app[SETTINGS].cancel_grace
        await store.append(job_id, [NewEvent(control.cancel_event_id(job_id), CancelRequested())])
        await store.check_by(job_id, time.time() + grace)
    request.app[FEED].poke()
    after = await store.get_job(job_id, request.app[SETTINGS].errors_cap)
    if after is None:  # pragma: no cover - jobs are never deleted while a server runs
        raise JobNotFound()
    return json_response(job_body(after.state, after.errors, request.app[SETTINGS].errors_cap), 202)
