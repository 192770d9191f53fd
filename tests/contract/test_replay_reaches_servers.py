"""A replay that repairs a projection reaches every running server on each store: the bodies a
server holds in memory (a finished job's, a running job's) are dropped, and GET answers from the
repaired projection within a look at the store (`tombstone_interval`). A server starts watching
after the newest swap and tombstone, however many there are."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import attrs
import pytest
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import (
    Created,
    NewEvent,
    RowSucceeded,
    Started,
    Succeeded,
    new_event_id,
)
from jobtracker.domain.projection import job_body
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import MemoryStore, SqliteStore, Store, replay
from jobtracker.store.base import utc_now
from jobtracker.store.keys import IssuedKey, issue_key
from jobtracker.store.rebuild import Rebuildable
from tests.conftest import make_test_store

FINISHED, RUNNING = "finished-job", "running-job"
_BUMP = "UPDATE jobs SET successful = successful + 1 WHERE job_id = $1"


async def _bump_successful(store: Store, postgres_url: str | None, job_id: str) -> None:
    """Behind the store's back, make the job's projection count one success too many (its log
    stays sound): what a replay repairs."""
    if isinstance(store, MemoryStore):
        state = store._jobs[job_id]
        store._jobs[job_id] = attrs.evolve(state, successful=state.successful + 1)
    elif isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(_BUMP.replace("$1", "?"), (job_id,))
        conn.close()
    else:
        assert postgres_url is not None
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute(_BUMP, job_id)
        finally:
            await conn.close()


async def _job(store: Store, key: IssuedKey, job_id: str, *, finish: bool) -> None:
    await store.create_job(job_id, Created(owner=key.record.key_id, total=3))
    events: list[Any] = [Started(), RowSucceeded(0, "a@uni.edu", internal=True),
                         RowSucceeded(1, "b@uni.edu", internal=False)]
    if finish:
        events += [RowSucceeded(2, "c@uni.edu", internal=False), Succeeded()]
    await store.append(job_id, [NewEvent(new_event_id(), event) for event in events])


async def _body(client: TestClient, key: IssuedKey, job_id: str) -> dict[str, Any]:
    response = await client.get(f"/api/v1/jobs/{job_id}", headers={"X-API-Key": key.secret})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def _store_body(store: Store, job_id: str) -> dict[str, Any]:
    """The job's GET body as the store's projection gives it now (no server's memory)."""
    view = await store.get_job(job_id, 1000)
    assert view is not None
    return job_body(view.state, view.errors, 1000)


async def _bodies(client: TestClient, key: IssuedKey) -> list[dict[str, Any]]:
    return [await _body(client, key, job_id) for job_id in (FINISHED, RUNNING)]


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(10):
        while not await check():  # noqa: ASYNC110 - the server's memory, not an event of ours
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("one_job", [False, True], ids=["replay", "replay --job"])
async def test_a_replay_repair_reaches_the_bodies_a_server_holds(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
    store: Store,
    store_kind: str,
    postgres_url: str | None,
    tmp_path: Path,
    one_job: bool,
) -> None:
    """A finished and a running job, each with a projection one success off: GET shows the
    wrong count (and holds it, as every poll of it is answered from memory); a replay run beside
    the server (another store handle on the same file or database) repairs both, and GET shows
    the count the log holds without the server being restarted."""
    await store.close()
    client = await aiohttp_client(create_app(Settings(tombstone_interval=0.02), store=store))
    key = await issue_key(store, "owner")
    await _job(store, key, FINISHED, finish=True)
    await _job(store, key, RUNNING, finish=False)
    truth = [await _store_body(store, job_id) for job_id in (FINISHED, RUNNING)]
    for job_id in (FINISHED, RUNNING):
        await _bump_successful(store, postgres_url, job_id)
    # Twice: the first GET reads the store and holds the body, the second is answered from it.
    wrong = await _bodies(client, key)
    assert [one != other for one, other in zip(wrong, truth, strict=True)] == [True, True]
    assert await _bodies(client, key) == wrong

    # As `jobtracker replay` would, from its own process: its own handle on the store.
    other = store if store_kind == "memory" else make_test_store(store_kind, tmp_path,
                                                                postgres_url)
    if other is not store:
        await other.open()
    try:
        assert isinstance(other, Rebuildable)
        for job_id in (FINISHED, RUNNING) if one_job else (None,):
            await replay.rebuild(other, job_id=job_id)
    finally:
        if other is not store:
            await other.close()

    async def repaired() -> bool:
        return await _bodies(client, key) == truth

    await _eventually(repaired)


async def test_a_server_starts_watching_after_the_newest_tombstone_and_swap(store: Store) -> None:
    """`forget_cursors` names the newest tombstone and replay swap, so a server starts after
    them in one read however many a long retention left, and hears every later one."""
    assert await store.forget_cursors() == (0, 0)
    key = await issue_key(store, "owner")
    for job_id in ("old-1", "old-2", "old-3"):
        await _job(store, key, job_id, finish=True)
    await store.prune(utc_now(), 100)
    assert isinstance(store, Rebuildable)
    await replay.rebuild(store)
    await _job(store, key, RUNNING, finish=False)
    await replay.rebuild(store, job_id=RUNNING)
    tombstone, swap = await store.forget_cursors()
    assert (tombstone, swap) == (3, 2)
    assert await store.pruned_since(tombstone) == []
    assert await store.swaps_since(swap) == []
    assert await store.swaps_since(swap - 1) == [(2, RUNNING)]
