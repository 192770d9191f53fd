"""Waiters on one API server wake when another process appends to the same PostgreSQL database."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store.keys import issue_key
from jobtracker.store.postgres import PostgresStore

OTHER_PROCESS = """
import asyncio, sys, time
from jobtracker.domain.events import NewEvent, ProgressReported
from jobtracker.store.postgres import PostgresStore
async def main():
    store = PostgresStore(sys.argv[1], pool_size=1)
    await store.open()
    await asyncio.sleep(0.5)
    await store.append(sys.argv[2], [NewEvent("elsewhere", ProgressReported(7, 10))])
    print(time.time(), flush=True)
    await store.close()
asyncio.run(main())
"""


async def server_on(pg_url: str, aiohttp_client: Callable[..., Awaitable[TestClient]]) -> tuple[
    TestClient, str
]:
    store = PostgresStore(pg_url, pool_size=4)
    client = await aiohttp_client(create_app(Settings(), store=store))
    key = await issue_key(store, "owner")
    await store.create_job("shared", Created(owner=key.record.key_id, total=10))
    return client, key.secret


async def appended_elsewhere(pg_url: str) -> Any:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", OTHER_PROCESS, pg_url, "shared", stdout=asyncio.subprocess.PIPE
    )


async def test_long_poll_wakes_on_an_append_by_another_process(
    pg_url: str, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """A held GET answers within a fraction of a second of another process's commit."""
    client, key = await server_on(pg_url, aiohttp_client)
    other = await appended_elsewhere(pg_url)
    response = await client.get(
        "/api/v1/jobs/shared?wait=20", headers={"X-API-Key": key, "If-None-Match": '"1"'}
    )
    seen_at = time.time()
    appended_at = float((await asyncio.wait_for(other.communicate(), 20))[0])
    assert response.status == 200
    assert (await response.json())["progress"]["current"] == 7
    assert seen_at - appended_at < 0.5


async def test_stream_carries_an_append_by_another_process(
    pg_url: str, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """An open event stream sends the body another process's append produced."""
    client, key = await server_on(pg_url, aiohttp_client)
    response = await client.get("/api/v1/jobs/shared/stream", headers={"X-API-Key": key})
    other = await appended_elsewhere(pg_url)
    seen = b""
    while b"PROGRESS" not in seen:
        seen += await asyncio.wait_for(response.content.readany(), 20)
    await other.communicate()
    assert b"id: 2\n" in seen
