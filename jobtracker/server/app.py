"""The HTTP API's app factory: settings, the store's life, and the routes to each handler."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from jobtracker.domain import codec
from jobtracker.server import openapi
from jobtracker.server.bodycache import CommitGate, FinishedBodies, JobOwners, RunningBodies
from jobtracker.server.common import ENCODED, FEED, FINISHED, GATE, OWNERS, SETTINGS, STORE
from jobtracker.server.control import HEARTBEATS, Heartbeats, Reaper, cancel, heartbeat
from jobtracker.server.errors import (
    FALLBACK_PATH,
    UNMATCHED,
    AddRoute,
    Answers,
    ExtraHeaders,
    Wrap,
    answering,
    no_route,
)
from jobtracker.server.events import append_events, job_errors, job_events
from jobtracker.server.health import healthz, readyz
from jobtracker.server.inventory import (
    Retention,
    forgetter,
    list_jobs,
    replay_forgetter,
    swaps_source,
)
from jobtracker.server.jobs import create_job, job_getter
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
from jobtracker.server.ui import add_dashboard, ui_headers
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
        retention = await Retention(
            store, app[SETTINGS], forgetter(app), replay_forgetter(app), swaps_source(app)
        ).start()
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


def _add_webhook_routes(add: AddRoute) -> None:
    add("POST", "/api/v1/webhooks", webhooks_api.create_webhook)
    add("GET", "/api/v1/webhooks", webhooks_api.list_webhooks)
    add("GET", "/api/v1/webhooks/{webhook_id}", webhooks_api.get_webhook)
    add("DELETE", "/api/v1/webhooks/{webhook_id}", webhooks_api.delete_webhook)
    add("GET", "/api/v1/webhooks/{webhook_id}/deliveries", webhooks_api.webhook_deliveries)


def _route_adder(app: web.Application, wrap: Wrap) -> AddRoute:
    """Adds each route with its handler wrapped (`errors.answering`); no HEAD unless added."""

    def add(method: str, path: str, handler: Answers, extra: ExtraHeaders = None, /) -> None:
        app.router.add_route(method, path, wrap(path, handler, extra))

    return add


def create_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    """The jobtracker web application; the store opens on startup and closes on cleanup."""
    app = web.Application(
        client_max_size=settings.max_body_bytes, handler_args=handler_args()
    )
    app[SETTINGS] = settings
    app[FINISHED] = FinishedBodies()
    app[OWNERS] = JobOwners()
    app[GATE] = CommitGate()
    app[ENCODED] = RunningBodies()
    app[HEARTBEATS] = Heartbeats()
    chosen = store or make_store(settings.store_url, group_commit=settings.group_commit)
    app.cleanup_ctx.append(_store_context(chosen))
    if settings.read_url is not None:
        app.cleanup_ctx.append(replica_context(settings.read_url))
    app.cleanup_ctx.append(webhooks_context)
    app.on_shutdown.append(_release_waiters)
    wrap = answering(HttpMetrics() if settings.metrics else None)
    add = _route_adder(app, wrap)
    # First: the route most requests take. Every route under /api/v1/jobs is a candidate the
    # router tries in the order added, and the polling GET should not try the others first.
    add("GET", "/api/v1/jobs/{job_id}", job_getter(app))
    add("POST", "/api/v1/jobs", create_job)
    add("GET", "/api/v1/jobs", list_jobs)
    add("POST", "/api/v1/jobs/{job_id}/events", append_events)
    add("GET", "/api/v1/jobs/{job_id}/events", job_events)
    add("GET", "/api/v1/jobs/{job_id}/errors", job_errors)
    add("GET", "/api/v1/jobs/{job_id}/stream", stream_job)
    add("POST", "/api/v1/jobs/{job_id}/heartbeat", heartbeat)
    add("POST", "/api/v1/jobs/{job_id}/cancel", cancel)
    add("GET", "/api/v1/openapi.json", openapi_document)
    _add_webhook_routes(add)
    add_dashboard(app, add)
    add("GET", "/healthz", healthz)
    add("GET", "/readyz", readyz)
    if settings.metrics and settings.metrics_port is None:
        add("GET", "/metrics", metrics_handler(lambda: app[STORE]))
    # Last, and matching every path: what no route above answers (404, or 405 naming the
    # methods the path has) still leaves as our JSON error, counted as `unmatched`.
    app.router.add_route("*", FALLBACK_PATH, wrap(UNMATCHED, no_route, ui_headers))
    return app
