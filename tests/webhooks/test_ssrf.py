"""Server-side request forgery: webhooks never reach loopback, private, link-local or multicast
addresses unless the server allows them, at subscription and again at every delivery."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.keys import issue_key
from jobtracker.store.webhooks import Webhook, iso_time
from tests.conditions import until_async
from tests.webhooks.conftest import Receiver, append, create_job

GUARDED = Settings(webhook_allow_http=True, webhook_poll=0.05, webhook_retry_delays=(0.2,))


@pytest.fixture(params=["sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The guard is the server's: one store is enough."""
    kind: str = request.param
    return kind


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> TestClient:
    """The app as deployed: private destinations refused."""
    await store.close()
    return await aiohttp_client(create_app(GUARDED, store=store))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_destinations_are_refused_at_subscription(
    client: TestClient, store: Store, url: str
) -> None:
    """422 naming `url` and the kind of address; nothing stored."""
    headers = {"X-API-Key": (await issue_key(store, "owner")).secret}
    answer = await client.post("/api/v1/webhooks", json={"url": url, "events": ["job.failed"]},
                               headers=headers)
    assert answer.status == 422
    detail = (await answer.json())["detail"]
    assert detail.startswith("url: refused")
    assert "address" in detail
    listed = await (await client.get("/api/v1/webhooks", headers=headers)).json()
    assert listed == {"webhooks": []}


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
async def test_a_destination_that_turned_private_is_refused_at_delivery(
    client: TestClient, store: Store, receiver: Receiver, host: str
) -> None:
    """A subscription whose host now resolves to loopback (DNS rebinding; a literal address
    too) gets no request: the attempt records the refusal and is retried later."""
    key = await issue_key(store, "owner")
    headers = {"X-API-Key": key.secret}
    hook = Webhook("wh_rebound", key.record.key_id, f"http://{host}:{receiver.port}/hook",
                   ("job.succeeded",), {}, "whsec_" + "A" * 44, iso_time(time.time()),
                   await store.last_position())
    await store.webhooks.add(hook)
    job_id = await create_job(client, headers)
    await append(client, headers, job_id, {"type": "succeeded"})

    async def refused() -> bool:
        attempts = await store.webhooks.attempts(hook.webhook_id, None, 10)
        return bool(attempts) and "loopback" in (attempts[0].error or "")

    await until_async(refused, "a refused attempt")
    assert receiver.received == []
