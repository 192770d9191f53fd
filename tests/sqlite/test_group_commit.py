"""Group commit on SQLite: many requests, one transaction, each request still on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobtracker.errors import JobNotFound, RowAlreadyReported
from jobtracker.events import Created, NewEvent, RowSucceeded, Started
from jobtracker.store import SqliteStore
from jobtracker.store.base import AppendResult
from jobtracker.store.sqlite import SqliteLog


def row(event_id: str, n: int) -> NewEvent:
    return NewEvent(event_id, RowSucceeded(row=n, email=f"p{n}@uni.edu", internal=False))


def test_one_refused_request_rolls_back_alone(tmp_path: Path) -> None:
    """In one group, a refused request leaves no trace and the requests around it commit."""
    log = SqliteLog(str(tmp_path / "g.db"))
    log.migrate()
    log.create_job("a", Created(owner="k"))
    outcomes = log.append_group([
        ("a", [row("e1", 1)]),
        ("a", [row("e2", 2), row("e3", 1)]),  # row 1 again: refused as a whole
        ("missing", [NewEvent("e4", Started())]),
        ("a", [row("e5", 3), row("e1", 1)]),  # e1 is an exact re-send from earlier in the group
    ])
    assert outcomes[0] == AppendResult(1, 0, 2)
    assert isinstance(outcomes[1], RowAlreadyReported)
    assert isinstance(outcomes[2], JobNotFound)
    assert outcomes[3] == AppendResult(1, 1, 3)
    assert [(e.version, e.event_id) for e in log.read_job_events("a")][1:] == [(2, "e1"), (3, "e5")]
    log.close()


async def test_without_group_commit_every_append_commits_alone(tmp_path: Path) -> None:
    """`group_commit=False` is the one-commit-per-request reference, with the same answers."""
    results = {}
    for grouped in (True, False):
        store = SqliteStore(str(tmp_path / f"{grouped}.db"), group_commit=grouped)
        await store.open()
        await store.create_job("a", Created(owner="k"))
        answers = await asyncio.gather(*(store.append("a", [row(f"e{n}", n)]) for n in range(20)))
        results[grouped] = sorted(a.version for a in answers)
        assert (store.committer.requests > 0) is grouped
        await store.close()
    assert results[True] == results[False] == list(range(2, 22))
