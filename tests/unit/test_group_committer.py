"""The group committer on its own, with a fake commit: who is answered what, and when."""

from __future__ import annotations

import asyncio

import pytest

from jobtracker.domain.errors import JobNotFound, StoreUnavailable
from jobtracker.domain.events import NewEvent, Started
from jobtracker.store.base import AppendResult
from jobtracker.store.group import AppendRequest, GroupCommitter, Outcome

ITEMS = [NewEvent("e", Started())]


class FakeStore:
    """Commits groups after a pause, remembering their sizes; refuses job 'missing'."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.groups: list[list[str]] = []
        self.fail_with = fail_with

    async def commit_group(self, requests: list[AppendRequest]) -> list[Outcome]:
        self.groups.append([job_id for job_id, _ in requests])
        await asyncio.sleep(0.01)
        if self.fail_with is not None:
            raise self.fail_with
        return [JobNotFound() if job_id == "missing" else AppendResult(1, 0, n)
                for n, (job_id, _) in enumerate(requests)]


async def test_requests_arriving_during_a_commit_share_the_next_one() -> None:
    """The first request commits alone; the 30 that arrive meanwhile share one commit."""
    store = FakeStore()
    committer = GroupCommitter(store.commit_group)
    first = asyncio.create_task(committer.submit(("a", ITEMS)))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(committer.submit((f"j{n}", ITEMS))) for n in range(30)]
    await asyncio.gather(first, *rest)
    assert [len(group) for group in store.groups] == [1, 30]
    assert (committer.requests, committer.groups) == (31, 2)


async def test_a_refused_request_gets_its_own_error_and_the_rest_their_results() -> None:
    """Inside one group each caller hears its own outcome."""
    committer = GroupCommitter(FakeStore().commit_group)
    answers = await asyncio.gather(
        committer.submit(("a", ITEMS)), committer.submit(("missing", ITEMS)),
        committer.submit(("b", ITEMS)), return_exceptions=True,
    )
    assert isinstance(answers[0], AppendResult)
    assert isinstance(answers[1], JobNotFound)
    assert isinstance(answers[2], AppendResult)


async def test_a_failed_commit_fails_every_request_in_the_group() -> None:
    """When the transaction itself fails, nobody's events are in and everybody is told."""
    committer = GroupCommitter(FakeStore(StoreUnavailable("disk full")).commit_group)
    answers = await asyncio.gather(
        *(committer.submit((f"j{n}", ITEMS)) for n in range(5)), return_exceptions=True
    )
    assert all(isinstance(answer, StoreUnavailable) for answer in answers)
    with pytest.raises(StoreUnavailable):
        await committer.submit(("later", ITEMS))
