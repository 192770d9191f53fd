"""Group commit: appends (and job creations) that arrive while the writer is busy are committed
together.

A store that pays one durable commit (an fsync) per transaction hands its appends and its job
creations to a `GroupCommitter` each. While one group is being written, new requests queue up on
the event loop; the next group takes all of them at once. There is no timer: a lone request goes
straight through, and under load the group grows by itself to whatever arrived during the previous
commit. The store's `commit_group` writes a group in one transaction in which a refused request
writes nothing and gets its own error while the others still commit; every caller is answered
only after that commit returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeAlias, TypeVar

import attrs

from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.events import Created, NewEvent
from jobtracker.domain.state import JobState
from jobtracker.store.base import AppendResult

#: One append request: the job and its batch.
AppendRequest: TypeAlias = tuple[str, Sequence[NewEvent]]
#: What one request of a group came to: its result, or the error that refused it alone.
Outcome: TypeAlias = AppendResult | JobtrackerError
#: One job creation: the job id and its `created` event; and what it came to (the job's state and
#: whether this request created it), or the error that refused it alone.
CreateRequest: TypeAlias = tuple[str, Created]
Creation: TypeAlias = tuple[JobState, bool]
CreateOutcome: TypeAlias = Creation | JobtrackerError

RequestT = TypeVar("RequestT")
ResultT = TypeVar("ResultT")

log = logging.getLogger(__name__)


@attrs.define
class _Waiting(Generic[RequestT, ResultT]):
    request: RequestT
    answer: asyncio.Future[ResultT]


class GroupCommitter(Generic[RequestT, ResultT]):
    """Queues requests on the loop and writes them in groups, one group at a time."""

    def __init__(
        self,
        commit_group: Callable[[list[RequestT]], Awaitable[Sequence[ResultT | JobtrackerError]]],
        *,
        most: int | None = None,
        what: str = "appends",
    ) -> None:
        self._commit_group = commit_group
        #: At most this many requests per group; 1 commits every request alone (the benchmarks'
        #: reference, `--no-group-commit`) through the very same path.
        self._most = most
        self._what = what
        self._queue: list[_Waiting[RequestT, ResultT]] = []
        self._drainer: asyncio.Task[None] | None = None
        #: Groups written so far and requests in them: lets tests and benchmarks see the grouping.
        self.groups = 0
        self.requests = 0
        #: Told the size of each group once it is committed (the server's metrics).
        self.observe: Callable[[int], None] | None = None

    async def submit(self, request: RequestT) -> ResultT:
        """Queue one request and wait until the group holding it is committed."""
        answer: asyncio.Future[ResultT] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(request, answer))
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

    async def _write(self, group: list[_Waiting[RequestT, ResultT]]) -> None:
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
        if self.observe is not None:
            self.observe(len(group))
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
            log.info("group commit: %d %s in %d commits", self.requests, self._what, self.groups)
