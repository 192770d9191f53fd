"""The GET fast path remembers finished bodies and keys, and never serves anything stale."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created, Failed, NewEvent, RowFailed, Started, Succeeded
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import SqliteStore, Store
from jobtracker.store.keys import IssuedKey, issue_key

AiohttpClient = Callable[..., Awaitable[TestClient]]


def url(job_id: str) -> str:
    return f"/api/v1/jobs/{job_id}"


async def finish(store: Store, job_id: str, owner: str) -> None:
    await store.create_job(job_id, Created(owner=owner, total=1))
    await store.append(job_id, [
        NewEvent("e1", Started()),
        NewEvent("e2", RowFailed(row=1, email="a@b.c", error="Invalid email: a@b.c")),
        NewEvent("e3", Succeeded()),
    ])


async def test_a_finished_body_reads_the_same_every_time_and_stays_private(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """Repeated GETs of a SUCCESS job answer identical bytes; another key still gets 403."""
    await finish(store, "done-1", owner_key.record.key_id)
    mine = {"X-API-Key": owner_key.secret}
    bodies = []
    for _ in range(3):
        response = await client.get(url("done-1"), headers=mine)
        assert response.status == 200
        bodies.append(await response.read())
    assert bodies[0] == bodies[1] == bodies[2]
    assert (await client.get(url("done-1"), headers=mine)).content_type == "application/json"
    theirs = await client.get(url("done-1"), headers={"X-API-Key": other_key.secret})
    assert theirs.status == 403
    assert await theirs.json() == {"detail": "Access denied to this job"}
    nobody = await client.get(url("done-1"), headers={"X-API-Key": "uc_live_" + "x" * 43})
    assert nobody.status == 401


async def test_a_job_read_while_running_shows_its_end_once_it_finishes(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    """A body read before the job ended is not reused: the next GET shows FAILURE."""
    mine = {"X-API-Key": owner_key.secret}
    await store.create_job("run-1", Created(owner=owner_key.record.key_id))
    await store.append("run-1", [NewEvent("s1", Started())])
    assert (await (await client.get(url("run-1"), headers=mine)).json())["status"] == "STARTED"
    await store.append("run-1", [NewEvent("f1", Failed(error="Achievement not found"))])
    body = await (await client.get(url("run-1"), headers=mine)).json()
    assert body == {"job_id": "run-1", "status": "FAILURE", "error": "Achievement not found"}


async def sqlite_client(aiohttp_client: AiohttpClient, path: Path) -> tuple[TestClient, Store]:
    store = SqliteStore(str(path))
    client = await aiohttp_client(create_app(Settings(store_url=f"sqlite:///{path}"), store=store))
    return client, store


async def test_a_key_revoked_by_another_process_is_refused_on_the_next_request(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """`jobtracker keys revoke` in another process: the very next GET is 401, cached or not."""
    path = tmp_path / "jobs.db"
    client, store = await sqlite_client(aiohttp_client, path)
    issued = await issue_key(store, "owner")
    await finish(store, "done-2", issued.record.key_id)
    mine = {"X-API-Key": issued.secret}
    for _ in range(2):  # the second read comes from memory: key and body are both remembered
        assert (await client.get(url("done-2"), headers=mine)).status == 200
    revoke = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobtracker", "keys", "revoke", issued.record.key_id,
        "--store", f"sqlite:///{path}", stdout=asyncio.subprocess.DEVNULL,
    )
    assert await revoke.wait() == 0
    refused = await client.get(url("done-2"), headers=mine)
    assert refused.status == 401
    assert await refused.json() == {"detail": "Invalid or revoked API key"}


async def test_a_key_revoked_through_another_connection_is_not_found_active_again(
    tmp_path: Path,
) -> None:
    """Two stores on one SQLite file: a revocation by one is seen by the other's next lookup."""
    path = str(tmp_path / "jobs.db")
    server, admin = SqliteStore(path), SqliteStore(path)
    await server.open()
    await admin.open()
    try:
        issued = await issue_key(admin, "owner")
        digest = issued.record.key_hash
        first = await server.find_key(digest)
        assert first is not None
        assert first.active
        assert await admin.revoke_key(issued.record.key_id)
        after = await server.find_key(digest)
        assert after is not None
        assert not after.active
        later = await issue_key(admin, "later")
        assert await server.find_key(later.record.key_hash) == later.record
    finally:
        await server.close()
        await admin.close()
