"""Following a job from the SDK: `tracker.watch(job_id)` and `tracker.wait(job_id)`.

The client asks with If-None-Match and `?wait=`, so the server holds the request until the job
changes (one request per change, none in between). A server that does not hold requests (it
answers a held request at once, or sends no ETag) is polled instead, no faster than its
Retry-After. The decisions live in `Follower`, shared by the sync and the asyncio loops.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import attrs

#: Longest hold asked of the server per request (the contract allows up to 60 s).
LONG_POLL = 30
#: Pause between polls when the server gives no Retry-After: the seed page's interval.
DEFAULT_POLL = 2.0
TERMINAL = frozenset({"SUCCESS", "FAILURE"})


@attrs.frozen
class Snapshot:
    """One answer about a job: its body (None when unchanged since `etag`) and the hints."""

    body: dict[str, Any] | None
    etag: str | None
    retry_after: float | None = None


Fetch = Callable[[str | None, int], Snapshot]
AsyncFetch = Callable[[str | None, int], Awaitable[Snapshot]]


@attrs.define
class Follower:
    """What to ask next and how long to pause, given what the last answer was."""

    deadline: float = math.inf
    etag: str | None = None
    last: dict[str, Any] | None = None

    def ask(self) -> tuple[str | None, int]:
        """The ETag to send and the `wait` to ask for; TimeoutError once the deadline passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the job did not finish in time")
        return self.etag, 0 if self.etag is None else int(min(LONG_POLL, max(1, left)))

    def take(
        self, answer: Snapshot, asked: int, took: float
    ) -> tuple[dict[str, Any] | None, float]:
        """The body to hand out (None if nothing new) and the pause before asking again."""
        fresh = answer.body if answer.body is not None and answer.body != self.last else None
        if fresh is not None:
            self.last = fresh
        self.etag = answer.etag
        held = asked > 0 and took >= asked / 2
        if answer.etag is not None and (fresh is not None or held):
            return fresh, 0.0  # a server that long-polls: ask again straight away
        pause = answer.retry_after if answer.retry_after is not None else DEFAULT_POLL
        return fresh, min(pause, max(0.0, self.deadline - time.monotonic()))


def is_terminal(body: dict[str, Any]) -> bool:
    """Whether a job body is final."""
    return body.get("status") in TERMINAL


def _deadline(within: float | None) -> float:
    return math.inf if within is None else time.monotonic() + within


def follow(fetch: Fetch, within: float | None = None) -> Iterator[dict[str, Any]]:
    """Each new body of a job until its terminal one (TimeoutError after `within` s)."""
    follower = Follower(_deadline(within))
    while True:
        etag, wait = follower.ask()
        started = time.monotonic()
        answer = fetch(etag, wait)
        body, pause = follower.take(answer, wait, time.monotonic() - started)
        if body is not None:
            yield body
            if is_terminal(body):
                return
        if pause:
            time.sleep(pause)


async def follow_async(
    fetch: AsyncFetch, within: float | None = None
) -> AsyncIterator[dict[str, Any]]:
    """The asyncio twin of `follow`."""
    follower = Follower(_deadline(within))
    while True:
        etag, wait = follower.ask()
        started = time.monotonic()
        answer = await fetch(etag, wait)
        body, pause = follower.take(answer, wait, time.monotonic() - started)
        if body is not None:
            yield body
            if is_terminal(body):
                return
        if pause:
            await asyncio.sleep(pause)
