"""The one place errors become HTTP: our error root by class, aiohttp's by status, the rest 500."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from jobtracker.domain.errors import (
    AccessDenied,
    ConfigError,
    Conflict,
    InvalidInput,
    JobExpired,
    JobNotFound,
    JobtrackerError,
    MalformedRequest,
    NotAuthenticated,
    PayloadTooLarge,
    RequestTimeout,
    StoreUnavailable,
    UnsupportedEncoding,
)
from jobtracker.server.common import SETTINGS, json_response

log = logging.getLogger(__name__)

#: Our errors and the HTTP status each one means; the first matching class wins.
HTTP_STATUS: tuple[tuple[type[JobtrackerError], int], ...] = (
    (MalformedRequest, 400),
    (NotAuthenticated, 401),
    (AccessDenied, 403),
    (JobNotFound, 404),
    (RequestTimeout, 408),
    (Conflict, 409),
    (JobExpired, 410),
    (PayloadTooLarge, 413),
    (UnsupportedEncoding, 415),
    (InvalidInput, 422),
    (StoreUnavailable, 503),
    (ConfigError, 500),
)
#: The request body codings we read (`server/protocol.py`), for a 415's Accept-Encoding.
ACCEPTED_CODINGS = "gzip, deflate"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Seconds a client is asked to wait before retrying a 503 (the store timed out or is down).
RETRY_UNAVAILABLE = "1"


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
            unavailable = json_response({"detail": exc.detail}, _status_of(exc))
            unavailable.headers["Retry-After"] = RETRY_UNAVAILABLE
            return unavailable
        response = json_response({"detail": exc.detail}, _status_of(exc))
        if isinstance(exc, UnsupportedEncoding):
            response.headers["Accept-Encoding"] = ACCEPTED_CODINGS  # RFC 9110, 15.5.16
        return response
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
