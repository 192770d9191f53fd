"""Group commit: appends that arrive while the writer is busy are committed together.

A store that pays one durable commit (an fsync) per transaction hands its appends to a
`GroupCommitter`. While one group is being written, new requests queue up on the event loop; the
next group takes all of them at once. There is no timer: a lone request goes straight through, and
under load the group grows by itself to whatever arrived during the previous commit. The store's
`commit_group` runs each request in a savepoint of one transaction, so a refused request gets its
own error and the others still commit; every caller is answered only after that commit returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeAlias

import attrs

from jobtracker.errors import JobtrackerError
from jobtracker.events import NewEvent
from jobtracker.store.base import AppendResult

#: One append request: the job and its batch.
AppendRequest: TypeAlias = tuple[str, Sequence[NewEvent]]
#: What one request of a group came to: its result, or the error that refused it alone.
Outcome: TypeAlias = AppendResult | JobtrackerError
CommitGroup: TypeAlias = Callable[[list[AppendRequest]], Awaitable[list[Outcome]]]

log = logging.getLogger(__name__)


@attrs.define
class _Waiting:
    request: AppendRequest
    answer: asyncio.Future[AppendResult]


class GroupCommitter:
    """Queues appends on the loop and writes them in groups, one group at a time."""

    def __init__(self, commit_group: CommitGroup, *, most: int | None = None) -> None:
        self._commit_group = commit_group
        #: At most this many requests per group; 1 commits every request alone (the benchmarks'
        #: reference, `--no-group-commit`) through the very same path.
        self._most = most
        self._queue: list[_Waiting] = []
        self._drainer: asyncio.Task[None] | None = None
        #: Groups written so far and requests in them: lets tests and benchmarks see the grouping.
        self.groups = 0
        self.requests = 0

    async def append(self, job_id: str, items: Sequence[NewEvent]) -> AppendResult:
        """Queue one append and wait until the group holding it is committed."""
        answer: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting((job_id, items), answer))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        try:
            while self._queue:
                most = len(self._queue) if self._most is None else self._most
                group, self._queue = self._queue[:most], self._queue[most:]
                await self._write(group)
        finally:
            self._drainer = None

    async def _write(self, group: list[_Waiting]) -> None:
        self.groups += 1
        self.requests += len(group)
        try:
            outcomes = await self._commit_group([waiting.request for waiting in group])
        except Exception as exc:
            # The transaction as a whole failed: nobody's events are in, everybody hears why.
            for waiting in group:
                if not waiting.answer.done():
                    waiting.answer.set_exception(exc)
            return
        except BaseException:
            for waiting in group:
                waiting.answer.cancel()
            raise
        for waiting, outcome in zip(group, outcomes, strict=True):
            if waiting.answer.done():  # the caller went away; its events are committed anyway
                continue
            if isinstance(outcome, JobtrackerError):
                waiting.answer.set_exception(outcome)
            else:
                waiting.answer.set_result(outcome)

    async def close(self) -> None:
        """Let the group being written, and any queued behind it, finish."""
        drainer = self._drainer
        if drainer is not None:
            await asyncio.shield(drainer)
        if self.groups:
            log.info("group commit: %d appends in %d commits", self.requests, self.groups)
