"""An append served by this process wakes its own waiters at once, not at the feed's next poll."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created
from jobtracker.server.app import FEED, create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.keys import issue_key
from tests.conditions import until

#: The feed's poll on a store that cannot report appends: far longer than any wake-up we accept.
SLOW_POLL = 5.0
#: How soon a waiter must answer after the append that changed its job was acknowledged.
AT_ONCE = 0.05


class Unheard:
    """A real store that cannot tell anyone about appends (no inotify, no LISTEN): a fake."""

    def __init__(self, inner: Store) -> None:
        self._inner = inner

    def on_append(self, wake: Callable[[], None]) -> bool:
        """Unable: whoever tails this store must poll it."""
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_append_through_this_server_wakes_a_held_request_at_once(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> None:
    """On a store that cannot report appends, the server's own append still answers a held GET
    within 50 ms of being acknowledged, far under the feed's 5 s poll."""
    await store.close()  # the app opens it again and owns it from here on
    client = await aiohttp_client(create_app(Settings(feed_interval=SLOW_POLL),
                                             store=Unheard(store)))  # type: ignore[arg-type]
    key = await issue_key(store, "owner")
    await store.create_job("job-w", Created(owner=key.record.key_id, total=10))
    headers = {"X-API-Key": key.secret}
    held = asyncio.ensure_future(client.get(
        "/api/v1/jobs/job-w?wait=30", headers={**headers, "If-None-Match": '"1"'}))
    await until(lambda: client.app[FEED].waiting == 1, "the GET was never held")
    appended = await client.post(
        "/api/v1/jobs/job-w/events", json=[{"type": "progress", "current": 3, "total": 10}],
        headers=headers)
    acknowledged = time.monotonic()
    assert appended.status == 200
    response = await asyncio.wait_for(held, 2 * SLOW_POLL)
    woken_after = time.monotonic() - acknowledged
    assert response.status == 200
    assert (await response.json())["progress"]["current"] == 3
    assert woken_after < AT_ONCE, f"the held GET answered {woken_after * 1000:.0f} ms later"
