"""Waiters on one API server wake when another process appends to the same PostgreSQL database."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created
from jobtracker.server.app import FEED, create_app
from jobtracker.server.settings import Settings
from jobtracker.store.keys import issue_key
from jobtracker.store.postgres import PostgresStore
from tests.conditions import until, until_async
from tests.pg_database import listeners

OTHER_PROCESS = """
import asyncio, sys, time
from jobtracker.domain.events import NewEvent, ProgressReported
from jobtracker.store.postgres import PostgresStore
from tests.conditions import until, until_async
from tests.pg_database import listeners
async def main():
    store = PostgresStore(sys.argv[1], pool_size=1)
    await store.open()
    await asyncio.to_thread(sys.stdin.readline)  # told to go once the server is waiting
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


async def append_elsewhere(pg_url: str) -> float:
    """Have another process append to job 'shared'; the time.time() it committed at."""
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OTHER_PROCESS, pg_url, "shared",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(other.communicate(b"go\n"), 20)
    return float(out)


async def server_listening(pg_url: str) -> None:
    """Until the server's change feed listens for appends (it connects in the background)."""
    await until_async(lambda: _any_listener(pg_url), "the server never listened for appends")


async def _any_listener(pg_url: str) -> bool:
    return bool(await listeners(pg_url))


async def test_long_poll_wakes_on_an_append_by_another_process(
    pg_url: str, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """A held GET answers within a fraction of a second of another process's commit."""
    client, key = await server_on(pg_url, aiohttp_client)
    held = asyncio.ensure_future(client.get(
        "/api/v1/jobs/shared?wait=20", headers={"X-API-Key": key, "If-None-Match": '"1"'}
    ))
    await until(lambda: client.app[FEED].waiting == 1, "the GET was never held")
    await server_listening(pg_url)
    appended_at = await append_elsewhere(pg_url)
    response = await asyncio.wait_for(held, 20)
    seen_at = time.time()
    assert response.status == 200
    assert (await response.json())["progress"]["current"] == 7
    assert seen_at - appended_at < 0.5


async def test_stream_carries_an_append_by_another_process(
    pg_url: str, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """An open event stream sends the body another process's append produced."""
    client, key = await server_on(pg_url, aiohttp_client)
    response = await client.get("/api/v1/jobs/shared/stream", headers={"X-API-Key": key})
    await server_listening(pg_url)
    appending = asyncio.ensure_future(append_elsewhere(pg_url))
    seen = b""
    while b"PROGRESS" not in seen:
        seen += await asyncio.wait_for(response.content.readany(), 20)
    await appending
    assert b"id: 2\n" in seen
