"""Webhook fixtures: a real HTTP receiver on loopback, and the app with a fast delivery schedule."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import attrs
import orjson
import pytest
import standardwebhooks
from aiohttp import web
from aiohttp.test_utils import TestClient

from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.keys import issue_key

#: A schedule a test can wait out: tries 0.2 s and 0.4 s apart, then every 0.4 s.
FAST = Settings(
    webhook_allow_http=True,
    webhook_allow_private=True,
    webhook_poll=0.05,
    webhook_retry_delays=(0.2, 0.4),
    webhook_lease=3.0,
    webhook_progress_interval=1.0,
    webhook_timeout=2.0,
)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Deliveries are a store matter: each store, the memory one as the reference."""
    kind: str = request.param
    return kind


@attrs.frozen
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> Any:
        """The body, decoded."""
        return orjson.loads(self.body)

    @property
    def msg_id(self) -> str:
        """The `webhook-id` header."""
        return self.headers["webhook-id"]


class Receiver:
    """An aiohttp server on 127.0.0.1 that records every POST and answers `status()`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.status: Callable[[Received], int] = lambda r: 200
        self.delay = 0.0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        got = Received({k.lower(): v for k, v in request.headers.items()},
                       await request.read(), time.time())
        self.received.append(got)
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.Response(status=self.status(got), text="ok")

    async def start(self, port: int = 0) -> None:
        """Listen (again) on `port`, 0 for any."""
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        """Stop listening: connections are refused until `start` again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def verified(self, secret: str) -> list[Any]:
        """Every body received, each checked against its signature (raises if one is bad)."""
        hook = standardwebhooks.Webhook(secret)
        return [hook.verify(r.body, r.headers) for r in self.received]

    def of_job(self, job_id: str) -> list[Received]:
        """What arrived about one job, in arrival order."""
        return [r for r in self.received if r.json["data"]["job_id"] == job_id]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A running receiver."""
    got = Receiver()
    await got.start()
    yield got
    await got.stop()


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> TestClient:
    """The app with its dispatcher on the per-kind store, fast schedule, loopback allowed."""
    await store.close()
    return await aiohttp_client(create_app(FAST, store=store))


@pytest.fixture
async def owner(client: TestClient, store: Store) -> dict[str, str]:
    """Headers of an owner key."""
    return {"X-API-Key": (await issue_key(store, "owner")).secret}


async def subscribe(
    client: TestClient, headers: dict[str, str], url: str, events: list[str],
    **extra: Any,
) -> dict[str, Any]:
    """Make a subscription; its creation answer (with the secret)."""
    answer = await client.post("/api/v1/webhooks", json={"url": url, "events": events, **extra},
                               headers=headers)
    assert answer.status == 201, await answer.text()
    body: dict[str, Any] = await answer.json()
    return body


async def create_job(client: TestClient, headers: dict[str, str], **body: Any) -> str:
    """Create a job; its id."""
    answer = await client.post("/api/v1/jobs", json=body, headers=headers)
    assert answer.status == 201, await answer.text()
    return str((await answer.json())["job_id"])


async def append(client: TestClient, headers: dict[str, str], job_id: str,
                 *events: dict[str, Any]) -> None:
    """Append events to a job over HTTP."""
    answer = await client.post(f"/api/v1/jobs/{job_id}/events", json=list(events),
                               headers=headers)
    assert answer.status == 200, await answer.text()


ALL_TYPES = ["job.started", "job.progress", "job.cancel_requested", "job.succeeded",
             "job.failed"]
