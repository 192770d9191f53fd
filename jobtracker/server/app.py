"""The HTTP API's app factory: settings, the store's life, and the routes to each handler."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from jobtracker.domain import codec
from jobtracker.server import openapi
from jobtracker.server.bodycache import CommitGate, FinishedBodies, JobOwners
from jobtracker.server.common import FEED, FINISHED, GATE, OWNERS, SETTINGS, STORE
from jobtracker.server.control import HEARTBEATS, Heartbeats, Reaper, cancel, heartbeat
from jobtracker.server.errors import request_middleware
from jobtracker.server.events import append_events, job_errors, job_events
from jobtracker.server.health import healthz, readyz
from jobtracker.server.inventory import Retention, forgetter, list_jobs
from jobtracker.server.jobs import create_job, get_job
from jobtracker.server.metrics import (
    COMMIT_GROUP_SIZE,
    HttpMetrics,
    count_reaped,
    metrics_handler,
)
from jobtracker.server.protocol import handler_args
from jobtracker.server.replica import replica_context
from jobtracker.server.settings import Settings
from jobtracker.server.stream import stream_job
from jobtracker.server.ui import add_dashboard
from jobtracker.server.webhooks import api as webhooks_api
from jobtracker.server.webhooks.running import webhooks_context
from jobtracker.store import Store, make_store
from jobtracker.store.feed import ChangeFeed

__all__ = ["FEED", "STORE", "create_app"]


@functools.cache
def _openapi_body() -> bytes:
    return codec.dumps(openapi.document())


async def openapi_document(request: web.Request) -> web.Response:
    """`GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document (no key needed)."""
    return web.Response(body=_openapi_body(), content_type="application/json")


def _store_context(store: Store) -> Callable[[web.Application], AsyncIterator[None]]:
    async def open_and_close(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        app[STORE] = store
        if app[SETTINGS].metrics:
            store.on_commit_group(COMMIT_GROUP_SIZE.observe)
        feed = ChangeFeed(
            store, app[SETTINGS].feed_interval, heartbeat=app[SETTINGS].heartbeat
        )
        await feed.start()
        app[FEED] = feed
        app[GATE].start(store, await store.last_position())
        reaper = Reaper(
            store, app[SETTINGS], app[HEARTBEATS], on_end=lambda _: feed.poke(),
            on_reaped=count_reaped if app[SETTINGS].metrics else lambda reason: None,
        )
        sweeping = asyncio.create_task(reaper.run(), name="jobtracker-reaper")
        retention = await Retention(store, app[SETTINGS], forgetter(app)).start()
        yield
        await _stop(retention)
        await reaper.stop(sweeping)
        await feed.stop()
        app[GATE].stop()
        await store.close()

    return open_and_close


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _release_waiters(app: web.Application) -> None:
    # Held requests and open streams end now instead of holding the shutdown for a minute.
    if FEED in app:
        await app[FEED].stop()


def _add_webhook_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/v1/webhooks", webhooks_api.create_webhook)
    router.add_get("/api/v1/webhooks", webhooks_api.list_webhooks, allow_head=False)
    router.add_get("/api/v1/webhooks/{webhook_id}", webhooks_api.get_webhook, allow_head=False)
    router.add_delete("/api/v1/webhooks/{webhook_id}", webhooks_api.delete_webhook)
    router.add_get("/api/v1/webhooks/{webhook_id}/deliveries", webhooks_api.webhook_deliveries,
                   allow_head=False)


def create_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    """The jobtracker web application; the store opens on startup and closes on cleanup."""
    app = web.Application(
        middlewares=[request_middleware(HttpMetrics() if settings.metrics else None)],
        client_max_size=settings.max_body_bytes,
        handler_args=handler_args(),
    )
    app[SETTINGS] = settings
    app[FINISHED] = FinishedBodies()
    app[OWNERS] = JobOwners()
    app[GATE] = CommitGate()
    app[HEARTBEATS] = Heartbeats()
    chosen = store or make_store(settings.store_url, group_commit=settings.group_commit)
    app.cleanup_ctx.append(_store_context(chosen))
    if settings.read_url is not None:
        app.cleanup_ctx.append(replica_context(settings.read_url))
    app.cleanup_ctx.append(webhooks_context)
    app.on_shutdown.append(_release_waiters)
    app.router.add_post("/api/v1/jobs", create_job)
    app.router.add_get("/api/v1/jobs", list_jobs, allow_head=False)
    app.router.add_get("/api/v1/jobs/{job_id}", get_job, allow_head=False)
    app.router.add_post("/api/v1/jobs/{job_id}/events", append_events)
    app.router.add_get("/api/v1/jobs/{job_id}/events", job_events, allow_head=False)
    app.router.add_get("/api/v1/jobs/{job_id}/errors", job_errors, allow_head=False)
    app.router.add_get("/api/v1/jobs/{job_id}/stream", stream_job, allow_head=False)
    app.router.add_post("/api/v1/jobs/{job_id}/heartbeat", heartbeat)
    app.router.add_post("/api/v1/jobs/{job_id}/cancel", cancel)
    app.router.add_get("/api/v1/openapi.json", openapi_document, allow_head=False)
    _add_webhook_routes(app.router)
    add_dashboard(app)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    if settings.metrics and settings.metrics_port is None:
        app.router.add_get("/metrics", metrics_handler(lambda: app[STORE]), allow_head=False)
    return app
