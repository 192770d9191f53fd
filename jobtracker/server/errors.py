"""What every request passes through, and the one place errors become HTTP: our error root by
class, aiohttp's by status, the rest 500.

`answering` wraps each route's handler (and the fallback route that answers paths and methods
no route has): it takes or makes the request's id (`X-Request-ID`, echoed, and kept in a context
variable every log line reads), turns errors into answers and, with metrics on, counts the answer
under the route's template. A wrapper per route rather than an aiohttp middleware: a middleware
costs every request two more coroutine layers (aiohttp adds one of its own), about a tenth of a
GET's time, and the route's template is known once, when it is registered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, cast

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
from jobtracker.server.logs import (
    NEW_REQUEST_IDS,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    request_id_for,
)
from jobtracker.server.metrics import CLIENT_GONE, HttpMetrics, RouteCounter

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
#: What a route may register: a handler, or a function that answers at once when it can (returns
#: a `web.Response` itself, not a subclass) and otherwise returns what to await for it: the
#: polling GET's usual answer needs no await, so no coroutine is made for it.
Answers = Callable[[web.Request], web.Response | Awaitable[web.StreamResponse]]
#: Seconds a client is asked to wait before retrying a 503 (the store timed out or is down).
RETRY_UNAVAILABLE = "1"


def _status_of(exc: JobtrackerError) -> int:
    return next((status for cls, status in HTTP_STATUS if isinstance(exc, cls)), 500)


def _http_detail(exc: web.HTTPException, request: web.Request) -> str:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        # aiohttp's exception does not keep the limit; the settings hold it.
        return f"Request body is larger than {request.app[SETTINGS].max_body_bytes} bytes"
    return exc.reason


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """Every error leaves as `{"detail": ...}`; no traceback ever reaches a client."""
    if isinstance(exc, JobtrackerError):
        response = json_response({"detail": exc.detail}, _status_of(exc))
        if isinstance(exc, StoreUnavailable):
            log.warning("store unavailable: %s", exc.detail)
            response.headers["Retry-After"] = RETRY_UNAVAILABLE
        elif isinstance(exc, UnsupportedEncoding):
            response.headers["Accept-Encoding"] = ACCEPTED_CODINGS  # RFC 9110, 15.5.16
        return response
    if isinstance(exc, web.HTTPException):
        response = json_response({"detail": _http_detail(exc, request)}, exc.status)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return json_response({"detail": "Internal server error"}, 500)


def _count_nothing(method: str, status: int, seconds: float) -> None:
    """What counts a request when metrics are off."""


#: Headers a route adds to each of its answers, errors and redirects included (None: none).
ExtraHeaders = Callable[[web.Request], Mapping[str, str]] | None
#: Wraps one route's handler: its template (the metrics label), the handler, its extra headers.
Wrap = Callable[[str, Answers, ExtraHeaders], Handler]


class AddRoute(Protocol):
    """Adds a route: method, path template, handler, and the headers each answer carries."""

    def __call__(
        self, method: str, path: str, handler: Answers, extra: ExtraHeaders = None, /
    ) -> None: ...


def answering(metrics: HttpMetrics | None) -> Wrap:
    """What wraps each route's handler: the request's id, the error answers, and unless
    `metrics` is None the request's count and duration (of the answer the client gets)."""

    def wrap(route: str, handler: Answers, extra: ExtraHeaders = None) -> Handler:
        count: RouteCounter = _count_nothing if metrics is None else metrics.route(route)

        async def answer(request: web.Request) -> web.StreamResponse:
            given = request.headers.get(REQUEST_ID_HEADER)
            request_id = next(NEW_REQUEST_IDS) if given is None else request_id_for(given)
            REQUEST_ID.set(request_id)  # each request runs in a task of its own: no reset needed
            started = time.perf_counter()
            answered: web.Response | Awaitable[web.StreamResponse] | None = None
            try:
                answered = handler(request)
                # `type() is`, not isinstance: Response is an ABC, slow to test against.
                if type(answered) is web.Response:
                    response: web.StreamResponse = answered
                else:
                    response = await cast(Awaitable[web.StreamResponse], answered)
            except Exception as exc:
                if isinstance(exc, web.HTTPException) and exc.status < 400:  # aiohttp sends these
                    exc.headers[REQUEST_ID_HEADER] = request_id
                    if extra is not None:
                        exc.headers.update(extra(request))
                    count(request.method, exc.status, time.perf_counter() - started)
                    raise
                response = error_response(request, exc)
            except BaseException:  # cancelled: the client went away
                count(request.method, CLIENT_GONE, time.perf_counter() - started)
                raise
            count(request.method, response.status, time.perf_counter() - started)
            # An answer given at once is not prepared; a stream prepares itself, id included.
            if response is answered or not response.prepared:
                response.headers[REQUEST_ID_HEADER] = request_id
                if extra is not None:
                    response.headers.update(extra(request))
            return response

        return answer

    return wrap


async def no_route(request: web.Request) -> web.StreamResponse:
    """The fallback route's handler: 405 naming the methods the path has, else 404."""
    allowed: set[str] = set()
    fallback = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not fallback:
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


#: The fallback route's path: every path, tried after every other route (aiohttp's router walks
#: a path's prefixes from the longest, and this one sits at the shortest, "/").
FALLBACK_PATH = "/{unmatched:.*}"
#: The metrics label of what the fallback route answers.
UNMATCHED = "unmatched"
