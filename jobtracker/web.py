"""The HTTP API: an aiohttp app factory, its handlers, and the one place errors become HTTP."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from jobtracker import codec, openapi, paging
from jobtracker.bodycache import FinishedBodies, FinishedBody, JobOwners
from jobtracker.config import Settings
from jobtracker.errors import (
    AccessDenied,
    ConfigError,
    Conflict,
    InvalidInput,
    JobNotFound,
    JobtrackerError,
    MalformedRequest,
    NotAuthenticated,
    PayloadTooLarge,
    StoreUnavailable,
)
from jobtracker.events import Created, is_valid_job_id, new_job_id
from jobtracker.keys import authenticate
from jobtracker.projection import job_body
from jobtracker.store import Store, make_store
from jobtracker.store.base import ApiKey, JobView
from jobtracker.watch import ChangeFeed, Wake

log = logging.getLogger(__name__)


STORE: web.AppKey[Store] = web.AppKey("jobtracker_store")
FEED = web.AppKey("jobtracker_change_feed", ChangeFeed)
SETTINGS = web.AppKey("jobtracker_settings", Settings)
FINISHED = web.AppKey("jobtracker_finished_bodies", FinishedBodies)
OWNERS = web.AppKey("jobtracker_job_owners", JobOwners)

#: Our errors and the HTTP status each one means; the first matching class wins.
HTTP_STATUS: tuple[tuple[type[JobtrackerError], int], ...] = (
    (MalformedRequest, 400),
    (NotAuthenticated, 401),
    (AccessDenied, 403),
    (JobNotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (StoreUnavailable, 503),
    (ConfigError, 500),
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return encoded_response(codec.dumps(body), status)


def encoded_response(body: bytes, status: int = 200) -> web.Response:
    """A response for JSON that is encoded already."""
    return web.Response(body=body, status=status, content_type="application/json")


def _status_of(exc: JobtrackerError) -> int:
    return next((status for cls, status in HTTP_STATUS if isinstance(exc, cls)), 500)


def _http_detail(exc: web.HTTPException, request: web.Request) -> str:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        # aiohttp's exception does not keep the limit; the settings hold it.
        return f"Request body is larger than {request.app[SETTINGS].max_body_bytes} bytes"
    return exc.reason


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as `{"detail": ...}`; no traceback ever reaches a client."""
    try:
        return await handler(request)
    except JobtrackerError as exc:
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable: %s", exc.detail)
        return json_response({"detail": exc.detail}, _status_of(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = json_response({"detail": _http_detail(exc, request)}, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"detail": "Internal server error"}, 500)


async def _key(request: web.Request) -> ApiKey:
    return await authenticate(request.app[STORE], request.headers.get("X-API-Key"))


async def _job_for(
    request: web.Request, key: ApiKey, *, workers_too: bool = False, with_errors: bool = True
) -> JobView:
    """The job named in the path, if this key may touch it: 404 before 403, as the seed says."""
    job_id = request.match_info["job_id"]
    if not is_valid_job_id(job_id):
        raise JobNotFound()
    errors_limit = request.app[SETTINGS].errors_cap if with_errors else 0
    view = await request.app[STORE].get_job(job_id, errors_limit)
    if view is None:
        raise JobNotFound()
    _check_access(view.state.owner, key, workers_too=workers_too)
    return view


async def _appendable_job(request: web.Request, key: ApiKey) -> str:
    """The path's job id once this key may append to it; the owner is read once per job."""
    job_id = request.match_info["job_id"]
    owner = request.app[OWNERS].get(job_id)
    if owner is None:
        owner = (await _job_for(request, key, workers_too=True, with_errors=False)).state.owner
        request.app[OWNERS].put(job_id, owner)
    _check_access(owner, key, workers_too=True)
    return job_id


def _check_access(owner: str, key: ApiKey, *, workers_too: bool = False) -> None:
    """403 unless `key` owns the job (or has the worker scope, where workers may act)."""
    if owner != key.key_id and not (workers_too and key.scope == "worker"):
        raise AccessDenied("Access denied to this job")


def _etag(view: JobView) -> str:
    return f'"{view.state.version}"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of If-None-Match against our ETag."""
    if not if_none_match:
        return False
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in (etag, "*") for tag in tags)


def _only_query(request: web.Request, *allowed: str) -> None:
    """Refuse unknown query parameters: a typo like `?wiat=30` must not be silently ignored."""
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown query parameter")


def _wait_seconds(request: web.Request) -> int:
    _only_query(request, "wait")
    raw = request.query.get("wait")
    limit = request.app[SETTINGS].max_wait
    if raw is None:
        return 0
    if not raw.isdigit() or int(raw) > limit:
        raise InvalidInput(f"wait: must be a whole number of seconds from 0 to {limit}")
    return int(raw)


def _freshness_headers(request: web.Request, view: JobView) -> dict[str, str]:
    headers = {"ETag": _etag(view), "Cache-Control": "no-cache"}
    if not view.state.status.is_terminal:
        headers["Retry-After"] = str(request.app[FEED].retry_after(view))
    return headers


def _reader(request: web.Request, job_id: str) -> Callable[[], Awaitable[JobView | None]]:
    store, cap = request.app[STORE], request.app[SETTINGS].errors_cap
    return lambda: store.get_job(job_id, cap)


def _body_response(request: web.Request, view: JobView) -> web.Response:
    body = job_body(view.state, view.errors, request.app[SETTINGS].errors_cap)
    response = json_response(body)
    response.headers.update(_freshness_headers(request, view))
    return response


async def get_job(request: web.Request) -> web.Response:
    """`GET /api/v1/jobs/{job_id}`: the seed's body; 304 or a held request with If-None-Match.

    A finished job's body is encoded once and served from memory afterwards: it never changes.
    """
    key = await _key(request)
    wait = _wait_seconds(request)
    held = request.app[FINISHED].get(request.match_info["job_id"])
    if held is not None:
        _check_access(held.owner, key)
        return _finished_response(request, held)
    view = await _job_for(request, key)
    if view.state.status.is_terminal:
        body = codec.dumps(job_body(view.state, view.errors, request.app[SETTINGS].errors_cap))
        held = FinishedBody(view.state.owner, body, _etag(view))
        request.app[FINISHED].put(view.state.job_id, held)
        return _finished_response(request, held)
    if not _matches(request.headers.get("If-None-Match"), _etag(view)):
        return _body_response(request, view)
    if wait:
        read = _reader(request, view.state.job_id)
        changed = await request.app[FEED].wait_for_change(
            view.state.job_id, read, view.state.version, wait
        )
        if changed is not None:
            return _body_response(request, changed)
    return web.Response(status=304, headers=_freshness_headers(request, view))


def _finished_response(request: web.Request, held: FinishedBody) -> web.Response:
    headers = {"ETag": held.etag, "Cache-Control": "no-cache"}
    if _matches(request.headers.get("If-None-Match"), held.etag):
        return web.Response(status=304, headers=headers)
    response = encoded_response(held.body)
    response.headers.update(headers)
    return response


def _sse_event(view: JobView, errors_cap: int) -> bytes:
    data = codec.dumps(job_body(view.state, view.errors, errors_cap))
    return b"id: %d\ndata: %s\n\n" % (view.state.version, data)


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", "")
    return int(raw) if raw.isdigit() else None


async def stream_job(request: web.Request) -> web.StreamResponse:
    """`GET /api/v1/jobs/{job_id}/stream`: the body on every change, until the terminal one."""
    key = await _key(request)
    await _job_for(request, key, with_errors=False)
    _only_query(request)
    settings, feed = request.app[SETTINGS], request.app[FEED]
    read = _reader(request, request.match_info["job_id"])
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    sent = _last_event_id(request)
    try:
        with feed.subscribe(request.match_info["job_id"]) as subscription:
            await response.write(b"retry: 2000\n\n")
            # Subscribed: from here on no change goes unnoticed, so this is where the stream starts.
            view: JobView | None = await read()
            while view is not None:
                if view.state.version != sent:
                    await response.write(_sse_event(view, settings.errors_cap))
                    sent = view.state.version
                    subscription.sent()
                if view.state.status.is_terminal:
                    break
                wake = await subscription.wait()
                if wake is Wake.CLOSED:
                    break
                if wake is Wake.HEARTBEAT:
                    await response.write(b": heartbeat\n\n")
                else:
                    view = await read()
    except (ConnectionResetError, JobtrackerError):
        pass  # the client left, or the store went away mid-stream: the stream just ends
    return response


async def _json_body(request: web.Request, *, empty: Any) -> Any:
    body = await request.read()
    return codec.parse_json(body) if body.strip() else empty


async def create_job(request: web.Request) -> web.Response:
    """`POST /api/v1/jobs`: create a job owned by the caller's key; idempotent per owner."""
    key = await _key(request)
    wanted = codec.decode_create_request(await _json_body(request, empty={}))
    created = Created(owner=key.key_id, total=wanted.total, label=wanted.label)
    state, is_new = await request.app[STORE].create_job(wanted.job_id or new_job_id(), created)
    request.app[OWNERS].put(state.job_id, state.owner)
    body = {"job_id": state.job_id, "status": state.status.value}
    return json_response(body, 201 if is_new else 200)


async def append_events(request: web.Request) -> web.Response:
    """`POST /api/v1/jobs/{job_id}/events`: append a batch atomically."""
    key = await _key(request)
    job_id = await _appendable_job(request, key)
    data = await _json_body(request, empty=None)
    limit = request.app[SETTINGS].max_events
    if isinstance(data, list) and len(data) > limit:
        raise PayloadTooLarge(f"Batch has {len(data)} events; the limit is {limit}")
    items = codec.decode_events(data)
    if not items:
        raise InvalidInput("events: the batch is empty")
    result = await request.app[STORE].append(job_id, items)
    request.app[FEED].poke()
    return json_response(
        {"appended": result.appended, "duplicates": result.duplicates, "version": result.version}
    )


@functools.cache
def _openapi_body() -> bytes:
    return codec.dumps(openapi.document())


async def openapi_document(request: web.Request) -> web.Response:
    """`GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document (no key needed)."""
    return web.Response(body=_openapi_body(), content_type="application/json")


async def job_events(request: web.Request) -> web.Response:
    """`GET /api/v1/jobs/{job_id}/events`: the job's history, oldest first, a page at a time."""
    key = await _key(request)
    view = await _job_for(request, key, with_errors=False)
    _only_query(request, "after_version", "limit")
    after = paging.int_param(request.query, "after_version", 0, 0)
    limit = paging.page_limit(request.query)
    found = await request.app[STORE].read_job_events(view.state.job_id, after, limit + 1)
    return json_response(paging.events_page(view.state.job_id, found, limit))


async def job_errors(request: web.Request) -> web.Response:
    """`GET /api/v1/jobs/{job_id}/errors`: every row error, in row order, a page at a time."""
    key = await _key(request)
    view = await _job_for(request, key, with_errors=False)
    _only_query(request, "after_row", "limit")
    after = paging.int_param(request.query, "after_row", -1, -1)
    limit = paging.page_limit(request.query)
    found = await request.app[STORE].read_job_errors(view.state.job_id, after, limit + 1)
    return json_response(paging.errors_page(view.state.job_id, found, limit, view.state.failed))


def _store_context(store: Store) -> Callable[[web.Application], AsyncIterator[None]]:
    async def open_and_close(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        app[STORE] = store
        feed = ChangeFeed(
            store, app[SETTINGS].feed_interval, heartbeat=app[SETTINGS].heartbeat
        )
        await feed.start()
        app[FEED] = feed
        yield
        await feed.stop()
        await store.close()

    return open_and_close


async def _release_waiters(app: web.Application) -> None:
    # Held requests and open streams end now instead of holding the shutdown for a minute.
    if FEED in app:
        await app[FEED].stop()


def create_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    """The jobtracker web application; the store opens on startup and closes on cleanup."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[FINISHED] = FinishedBodies()
    app[OWNERS] = JobOwners()
    chosen = store or make_store(settings.store_url, group_commit=settings.group_commit)
    app.cleanup_ctx.append(_store_context(chosen))
    app.router.add_get("/api/v1/jobs/{job_id}", get_job, allow_head=False)
    app.router.add_post("/api/v1/jobs", create_job)
    app.router.add_post("/api/v1/jobs/{job_id}/events", append_events)
    app.router.add_get("/api/v1/jobs/{job_id}/stream", stream_job, allow_head=False)
    app.router.add_get("/api/v1/openapi.json", openapi_document, allow_head=False)
    app.on_shutdown.append(_release_waiters)
    app.router.add_get("/api/v1/jobs/{job_id}/events", job_events, allow_head=False)
    app.router.add_get("/api/v1/jobs/{job_id}/errors", job_errors, allow_head=False)
    return app
