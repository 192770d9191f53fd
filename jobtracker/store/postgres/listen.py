"""Hints that the PostgreSQL log grew: this process's own commits, and NOTIFY from every other.

A hint only says "look again"; whoever is woken re-reads the store. The listening connection can
die (server restart, pooler, network): it is replaced at most once per `retry_interval`, and until
then waiters find appends by polling, so a lost notification costs latency, never an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from jobtracker.store.postgres.sql import APPEND_CHANNEL

log = logging.getLogger(__name__)

#: What we expect connecting or listening may raise; anything of these just means "poll for now".
_LISTEN_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


class AppendHints:
    """Wakes waiters and subscribers whenever any process may have appended."""

    def __init__(self, url: str, retry_interval: float, channel: str = APPEND_CHANNEL) -> None:
        self._url = url
        self._channel = channel
        self._retry_interval = retry_interval
        self._changed = asyncio.Event()
        self._subscribers: list[Callable[[], None]] = []
        self._listener: asyncpg.Connection | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._next_try = 0.0
        self._closed = False

    @property
    def listening(self) -> bool:
        """Whether a connection is listening right now (hints can be lost while it is not)."""
        return self._listener is not None and not self._closed

    def changed(self) -> asyncio.Event:
        """An event set at the next hint; take it before re-reading, then wait on it."""
        return self._changed

    def wake(self) -> None:
        """Something may have been appended: wake everyone once."""
        self._changed.set()
        self._changed = asyncio.Event()
        for subscriber in self._subscribers:
            subscriber()

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Call `wake` on every hint from now on (and keep a listening connection for it)."""
        self._subscribers.append(wake)
        self.keep_listening()

    def keep_listening(self) -> None:
        """Start connecting in the background unless listening (or trying) already."""
        if self._closed or self._listener is not None or self._connecting is not None:
            return
        self._connecting = asyncio.get_running_loop().create_task(
            self._connect(), name="jobtracker-postgres-listen"
        )

    async def ensure_listening(self) -> None:
        """Try to listen now (at most once per retry interval); never raises."""
        self.keep_listening()
        if self._connecting is not None:
            await asyncio.wait({self._connecting})  # its end, however it ends

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if loop.time() < self._next_try:
                return
            self._next_try = loop.time() + self._retry_interval
            listener = await asyncpg.connect(self._url, timeout=self._retry_interval)
            try:
                await listener.add_listener(self._channel, self._heard)
            except BaseException:
                listener.terminate()
                raise
            listener.add_termination_listener(self._lost)
            if self._closed:
                await listener.close()
                return
            self._listener = listener
        except _LISTEN_ERRORS as exc:
            log.info("not listening for appends (polling instead): %s", exc)
            self._retry_later()
        finally:
            self._connecting = None

    def _heard(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self.wake()

    def _lost(self, conn: object) -> None:
        if conn is self._listener:
            self._listener = None
            self._retry_later()
        self.wake()  # whatever happened while nobody listened, readers look now

    def _retry_later(self) -> None:
        if self._closed or not self._subscribers or self._retry is not None:
            return
        self._retry = asyncio.get_running_loop().call_later(self._retry_interval, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self.keep_listening()

    async def close(self) -> None:
        """Stop listening and retrying; subscribers hear nothing more."""
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(*_LISTEN_ERRORS):
                await listener.close()
        self._subscribers.clear()
