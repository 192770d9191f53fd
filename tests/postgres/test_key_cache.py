"""Key lookups are remembered on PostgreSQL too, and a revocation anywhere ends them at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store.keys import issue_key
from jobtracker.store.postgres import PostgresStore


async def test_revocation_by_another_process_is_refused_on_the_next_request(
    pg_url: str, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """A key cached by server A stops working as soon as server B's revocation commits."""
    store_a = PostgresStore(pg_url, pool_size=4)
    client = await aiohttp_client(create_app(Settings(), store=store_a))
    issued = await issue_key(store_a, "owner")
    await store_a.create_job("j", Created(owner=issued.record.key_id))
    headers = {"X-API-Key": issued.secret}
    for _ in range(3):  # warm: the key is now remembered by server A
        assert (await client.get("/api/v1/jobs/j", headers=headers)).status == 200
    store_b = PostgresStore(pg_url, pool_size=1)
    await store_b.open()
    try:
        await store_b.revoke_key(issued.record.key_id)
        revoked_at = time.monotonic()
        statuses = []
        while len(statuses) < 50 and 401 not in statuses:
            statuses.append((await client.get("/api/v1/jobs/j", headers=headers)).status)
        took = time.monotonic() - revoked_at
    finally:
        await store_b.close()
    assert statuses[-1] == 401
    assert took < 0.2, f"revocation took {took * 1000:.0f} ms to reach server A ({statuses})"
    assert (await client.get("/api/v1/jobs/j", headers=headers)).status == 401


async def test_a_key_remembered_by_the_server_is_dropped_when_key_changes_stop_being_heard(
    pg_url: str, aiohttp_client: Callable[..., Awaitable[TestClient]]
) -> None:
    """The server remembers a key by its secret (no hash per GET) only while the store hears key
    changes: with the listener cut, a revocation nobody announces is refused at the next GET."""
    store_a = PostgresStore(pg_url, pool_size=4, poll_interval=30)  # no reconnect in this test
    client = await aiohttp_client(create_app(Settings(), store=store_a))
    issued = await issue_key(store_a, "owner")
    await store_a.create_job("j", Created(owner=issued.record.key_id))
    headers = {"X-API-Key": issued.secret}
    for _ in range(3):
        assert (await client.get("/api/v1/jobs/j", headers=headers)).status == 200
    killer = await asyncpg.connect(pg_url)
    try:
        killed = await killer.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%jobtracker_keys%' AND datname = current_database()"
        )
        assert killed == 1
        for _ in range(100):  # the termination reaches the store's listener
            if not store_a.key_changes_heard:
                break
            await asyncio.sleep(0.02)
        assert not store_a.key_changes_heard
        # Read while nobody listens: answered, but not remembered.
        assert (await client.get("/api/v1/jobs/j", headers=headers)).status == 200
        await killer.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", issued.record.key_id
        )
    finally:
        await killer.close()
    assert (await client.get("/api/v1/jobs/j", headers=headers)).status == 401
