"""Waiting in tests for something observable to become true, instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

#: How long a test waits for a condition before failing, on a slow shared machine.
PATIENCE = 20.0
#: What a condition is, for the failure message: text, or a function saying how things stand.
What = str | Callable[[], str]


def _failure(what: What, within: float) -> AssertionError:
    return AssertionError(f"{what() if callable(what) else what}: not within {within} s")


async def until(condition: Callable[[], bool], what: What, within: float = PATIENCE) -> None:
    """Return once `condition()` holds (checked every millisecond); fail naming `what` after
    `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise _failure(what, within)
        await asyncio.sleep(0.001)


async def until_async(
    condition: Callable[[], Awaitable[bool]], what: What, within: float = PATIENCE
) -> None:
    """`until` for a condition that must be awaited (a query), checked every 5 ms."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise _failure(what, within)
        await asyncio.sleep(0.005)


def wait_until(condition: Callable[[], bool], what: What, within: float = PATIENCE) -> None:
    """`until` for synchronous tests (threads, processes), checked every 10 ms."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise _failure(what, within)
        time.sleep(0.01)
