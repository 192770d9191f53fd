"""Waiting without hammering: one change feed per server process wakes every waiting request.

The feed tails the store (`Store.changes_since`) from a single task: a thousand clients waiting on a
job cost one cheap query per tick, not a thousand. An append served by this process pokes the feed
so its waiters wake at once; an append by any other process (an SDK writing straight into SQLite,
another API server) is seen on the next tick. A wake-up is only a hint: waiters always re-read the
job from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.state import Status
from jobtracker.store.base import JobView, Store

log = logging.getLogger(__name__)

#: Jobs whose recent pace the feed remembers, for Retry-After hints.
PACE_MEMORY = 10_000


class Listener(Protocol):
    """Something told of every change the feed sees, for as long as the feed runs (the server's
    event streams: one listener for all of them, however many there are)."""

    def changed(self, job_id: str) -> None:
        """The feed saw the job change."""

    def closed(self) -> None:
        """The feed stopped: the server is shutting down."""


L = TypeVar("L", bound=Listener)


class ChangeFeed:
    """Tails the store and wakes the waiters of each job that changed."""

    def __init__(
        self,
        store: Store,
        interval: float = 0.02,
        fallback: float = 1.0,
        heartbeat: float = 30.0,
    ) -> None:
        self._store = store
        self._interval = interval
        self._fallback = fallback
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._listeners: list[Listener] = []
        self._heartbeat = heartbeat
        self._last_seen: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._poked: asyncio.Future[None] | None = None
        self._poke_pending = False
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._cursor = 0
        self.closed = False

    async def start(self) -> None:
        """Begin tailing from the end of the log.

        When the store can tell us about appends (inotify on SQLite, LISTEN on PostgreSQL) the feed
        sleeps until told, and polls only as a slow fallback in case a hint is ever lost.
        """
        self._cursor = await self._store.last_position()
        if self._store.on_append(self.poke):
            self._interval = self._fallback
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._poll)
        self._tasks = [asyncio.create_task(self._run(), name="jobtracker-change-feed")]

    async def stop(self) -> None:
        """Stop tailing and release every waiter (they re-read and answer) and every stream."""
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for job_id in list(self._waiters):
            self._wake(job_id)
        for listener in self._listeners:
            listener.closed()

    def poke(self) -> None:
        """Something was appended here: look now instead of at the next tick."""
        # Remembered even while a look is under way: the commit that caused this poke may have
        # landed after that look's query.
        self._poke_pending = True
        if self._poked is not None:
            _resolve(self._poked)

    def _poll(self) -> None:
        # One timer for the life of the feed, re-armed as it fires: a timer per wake-up would cost
        # a push and a cancel in asyncio's timer heap, every time.
        self.poke()
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._poll)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._poke_pending:
                self._poked = loop.create_future()
                await self._poked
            self._poke_pending = False
            try:
                await self._drain()
            except JobtrackerError as exc:  # the store is down: keep trying, waiters time out
                log.warning("change feed: %s", exc.detail)
                await asyncio.sleep(min(1.0, self._interval * 50))

    async def _drain(self) -> None:
        while changes := await self._store.changes_since(self._cursor):
            now = time.monotonic()
            for change in changes:
                self._cursor = max(self._cursor, change.position)
                self._remember(change.job_id, now)
                self._wake(change.job_id)

    def _remember(self, job_id: str, now: float) -> None:
        previous = self._last_seen.pop(job_id, None)
        gap = now - previous[0] if previous else math.inf
        self._last_seen[job_id] = (now, gap)
        if len(self._last_seen) > PACE_MEMORY:
            self._last_seen.popitem(last=False)

    def _wake(self, job_id: str) -> None:
        for waiter in self._waiters.pop(job_id, ()):
            _resolve(waiter)
        for listener in self._listeners:
            listener.changed(job_id)

    @property
    def heartbeat(self) -> float:
        """Seconds an event stream may go without sending anything before it sends a comment."""
        return self._heartbeat

    def listener(self, kind: type[L], make: Callable[[], L]) -> L:
        """The feed's one listener of `kind`, made by `make` on first use; told of every change
        from then on (and at once that the feed stopped, if it has)."""
        for listener in self._listeners:
            if isinstance(listener, kind):
                return listener
        made = make()
        self._listeners.append(made)
        if self.closed:
            made.closed()
        return made

    def retry_after(self, view: JobView) -> int:
        """Seconds a poller should wait: about the job's own pace, 1 to 30 s."""
        seen = self._last_seen.get(view.state.job_id)
        if seen is None or math.isinf(seen[1]):
            return 5 if view.state.status is Status.PENDING else 2
        return max(1, min(30, math.ceil(seen[1])))

    async def wait_for_change(
        self,
        job_id: str,
        read: Callable[[], Awaitable[JobView | None]],
        seen_version: int,
        within: float,
    ) -> JobView | None:
        """The job once its version differs from `seen_version`, or None after `within` s.

        The waiter is registered before the store is re-read, so a change landing between the
        read and the wait still wakes it; and a wait that ends without a wake-up needs no read
        at all: nothing the feed saw touched the job (a thousand long-polls timing out would
        otherwise cost a thousand reads). Event streams hold a `Subscription` instead.
        """
        deadline = asyncio.get_running_loop().time() + within
        while True:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(job_id, set()).add(waiter)
            try:
                view = await read()
                if view is None or view.state.version != seen_version:
                    return view
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 or self.closed:
                    return None
                try:
                    await asyncio.wait_for(waiter, remaining)
                except TimeoutError:
                    return None
            finally:
                self._forget(job_id, waiter)

    def _forget(self, job_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(job_id)
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del self._waiters[job_id]

    @property
    def waiting(self) -> int:
        """How many requests are waiting right now."""
        return sum(len(w) for w in self._waiters.values())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
