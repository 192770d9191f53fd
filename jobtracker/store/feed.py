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
import enum
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator

from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.state import Status
from jobtracker.store.base import JobView, Store

log = logging.getLogger(__name__)

#: Jobs whose recent pace the feed remembers, for Retry-After hints.
PACE_MEMORY = 10_000


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
        self._subscribers: dict[str, set[Subscription]] = {}
        self._heartbeats = Heartbeats(heartbeat)
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
        self._tasks = [
            asyncio.create_task(self._run(), name="jobtracker-change-feed"),
            asyncio.create_task(self._heartbeats.run(), name="jobtracker-heartbeats"),
        ]

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
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.close()

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
        for subscription in self._subscribers.get(job_id, ()):
            subscription.changed()

    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[Subscription]:
        """A standing interest in one job for as long as the block runs (an event stream's)."""
        subscription = Subscription(self._heartbeats)
        self._subscribers.setdefault(job_id, set()).add(subscription)
        self._heartbeats.add(subscription)
        if self.closed:
            subscription.close()
        try:
            yield subscription
        finally:
            self._heartbeats.discard(subscription)
            subscribers = self._subscribers.get(job_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[job_id]

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


class Wake(enum.Enum):
    """Why a subscription's wait ended."""

    CHANGE = "change"  # the feed saw the job change: read it
    HEARTBEAT = "heartbeat"  # nothing was sent for a heartbeat period
    CLOSED = "closed"  # the server is stopping


class Subscription:
    """An event stream's standing interest in one job, registered for the stream's whole life.

    Unlike a long-poll's one-off wait it stays registered between wake-ups: a change that lands
    while the stream is writing is still noted, so a stream reads the job once per change, not
    once more to be sure. Its heartbeat comes from the feed's one shared clock (`Heartbeats`), not
    a timer of its own: a thousand timers in asyncio's heap make every timer operation of the
    process dearer.
    """

    __slots__ = ("_beat", "_changed", "_clock", "_closed", "_waiter")

    def __init__(self, clock: Heartbeats) -> None:
        self._clock = clock
        self._changed = self._beat = self._closed = False
        self._waiter: asyncio.Future[None] | None = None

    def changed(self) -> None:
        """The feed saw the job change."""
        self._changed = True
        self._wake()

    def heartbeat(self) -> None:
        """A heartbeat period passed with nothing sent."""
        self._beat = True
        self._wake()

    def close(self) -> None:
        """The feed is stopping."""
        self._closed = True
        self._wake()

    def sent(self) -> None:
        """The stream just sent something: its next heartbeat is a whole period away."""
        self._clock.reset(self)

    def _wake(self) -> None:
        if self._waiter is not None:
            _resolve(self._waiter)

    async def wait(self) -> Wake:
        """Until the job changes, a heartbeat is due or the feed stops (a change first)."""
        if not (self._changed or self._beat or self._closed):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._closed:
            return Wake.CLOSED
        self._beat = False
        if self._changed:
            self._changed = False
            return Wake.CHANGE
        return Wake.HEARTBEAT


class Heartbeats:
    """One clock for every stream's heartbeat.

    Every stream has the same period, so streams ordered by when they last sent something are
    also ordered by when their next heartbeat is due: an insertion-ordered map, moved to the end
    on every send, lets one periodic check pop just the streams that are due.
    """

    def __init__(self, period: float) -> None:
        self._period = period
        self._last_sent: OrderedDict[Subscription, float] = OrderedDict()

    def add(self, subscription: Subscription) -> None:
        """Start counting for a new stream."""
        self._last_sent[subscription] = time.monotonic()

    def discard(self, subscription: Subscription) -> None:
        """Forget a stream that ended."""
        self._last_sent.pop(subscription, None)

    def reset(self, subscription: Subscription) -> None:
        """The stream sent something now."""
        if subscription in self._last_sent:
            self._last_sent.move_to_end(subscription)
            self._last_sent[subscription] = time.monotonic()

    async def run(self) -> None:
        """Tell each stream when its heartbeat is due, checking a few times per period."""
        step = min(1.0, self._period / 4)
        while True:
            await asyncio.sleep(step)
            due = time.monotonic() - self._period
            while self._last_sent:
                subscription, last = next(iter(self._last_sent.items()))
                if last > due:
                    break
                self.reset(subscription)
                subscription.heartbeat()
