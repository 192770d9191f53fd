"""The HTTP API: an aiohttp app factory, its handlers, and the one place errors become HTTP."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from jobtracker import codec
from jobtracker.bodycache import FinishedBodies, FinishedBody
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

log = logging.getLogger(__name__)

STORE: web.AppKey[Store] = web.AppKey("jobtracker_store")
SETTINGS = web.AppKey("jobtracker_settings", Settings)
FINISHED = web.AppKey("jobtracker_finished_bodies", FinishedBodies)

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


def _http_detail(exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return f"Request body is larger than {exc.max_size} bytes"  # type: ignore[attr-defined]
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
        response = json_response({"detail": _http_detail(exc)}, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response({"detail": "Internal server error"}, 500)


async def _key(request: web.Request) -> ApiKey:
    return await authenticate(request.app[STORE], request.headers.get("X-API-Key"))


async def _job_for(request: web.Request, key: ApiKey, *, workers_too: bool = False) -> JobView:
    """The job named in the path, if this key may touch it: 404 before 403, as the seed says."""
    job_id = request.match_info["job_id"]
    if not is_valid_job_id(job_id):
        raise JobNotFound()
    view = await request.app[STORE].get_job(job_id, request.app[SETTINGS].errors_cap)
    if view is None:
        raise JobNotFound()
    _check_access(view.state.owner, key, workers_too=workers_too)
    return view


def _check_access(owner: str, key: ApiKey, *, workers_too: bool = False) -> None:
    """403 unless `key` owns the job (or has the worker scope, where workers may act)."""
    if owner != key.key_id and not (workers_too and key.scope == "worker"):
        raise AccessDenied("Access denied to this job")


async def get_job(request: web.Request) -> web.Response:
    """`GET /api/v1/jobs/{job_id}`: the seed's body for the job's status.

    A finished job's body is encoded once and served from memory afterwards: it never changes.
    """
    key = await _key(request)
    finished = request.app[FINISHED]
    held = finished.get(request.match_info["job_id"])
    if held is not None:
        _check_access(held.owner, key)
        return encoded_response(held.body)
    view = await _job_for(request, key)
    body = codec.dumps(job_body(view.state, view.errors, request.app[SETTINGS].errors_cap))
    if view.state.status.is_terminal:
        finished.put(view.state.job_id, FinishedBody(view.state.owner, body))
    return encoded_response(body)


async def _json_body(request: web.Request, *, empty: Any) -> Any:
    body = await request.read()
    return codec.parse_json(body) if body.strip() else empty


async def create_job(request: web.Request) -> web.Response:
    """`POST /api/v1/jobs`: create a job owned by the caller's key; idempotent per owner."""
    key = await _key(request)
    wanted = codec.decode_create_request(await _json_body(request, empty={}))
    created = Created(owner=key.key_id, total=wanted.total, label=wanted.label)
    state, is_new = await request.app[STORE].create_job(wanted.job_id or new_job_id(), created)
    body = {"job_id": state.job_id, "status": state.status.value}
    return json_response(body, 201 if is_new else 200)


async def append_events(request: web.Request) -> web.Response:
    """`POST /api/v1/jobs/{job_id}/events`: append a batch atomically."""
    key = await _key(request)
    view = await _job_for(request, key, workers_too=True)
    data = await _json_body(request, empty=None)
    limit = request.app[SETTINGS].max_events
    if isinstance(data, list) and len(data) > limit:
        raise PayloadTooLarge(f"Batch has {len(data)} events; the limit is {limit}")
    items = codec.decode_events(data)
    if not items:
        raise InvalidInput("events: the batch is empty")
    result = await request.app[STORE].append(view.state.job_id, items)
    return json_response(
        {"appended": result.appended, "duplicates": result.duplicates, "version": result.version}
    )


def _store_context(store: Store) -> Callable[[web.Application], AsyncIterator[None]]:
    async def open_and_close(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        app[STORE] = store
        yield
        await store.close()

    return open_and_close


def create_app(settings: Settings, *, store: Store | None = None) -> web.Application:
    """The jobtracker web application; the store opens on startup and closes on cleanup."""
    app = web.Application(middlewares=[error_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[FINISHED] = FinishedBodies()
    app.cleanup_ctx.append(_store_context(store or make_store(settings.store_url)))
    app.router.add_get("/api/v1/jobs/{job_id}", get_job, allow_head=False)
    app.router.add_post("/api/v1/jobs", create_job)
    app.router.add_post("/api/v1/jobs/{job_id}/events", append_events)
    return app
