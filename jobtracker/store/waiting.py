"""Waiting for the log to grow, the same way for every store.

A store that can be woken (PostgreSQL: LISTEN/NOTIFY) says so by having `wait_for_append`; any other
store is polled. Either way the answer comes from reading the store, never from a message alone.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

from jobtracker.store.base import Store

#: How often a store without wake-ups is re-read while someone waits.
POLL_INTERVAL = 0.2


@runtime_checkable
class Wakeable(Protocol):
    """A store that can wait for an append without being polled by its caller."""

    async def wait_for_append(self, after_position: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Whether an event past `after_position` was committed within `timeout` seconds."""


async def wait_for_append(
    store: Store, after_position: int, timeout: float, poll: float = POLL_INTERVAL  # noqa: ASYNC109
) -> bool:
    """Wait until the log holds an event past `after_position`; False when `timeout` runs out."""
    if isinstance(store, Wakeable):
        return await store.wait_for_append(after_position, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await store.read_log(after_position, 1):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(poll, remaining))
    return True
