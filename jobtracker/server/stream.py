"""`GET /api/v1/jobs/{job_id}/stream`: server-sent events, one per change of the job."""

from __future__ import annotations

from aiohttp import web

from jobtracker.domain import codec, paging
from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.projection import job_body
from jobtracker.server.common import FEED, SETTINGS, job_for, only_query, request_key
from jobtracker.server.jobs import reader
from jobtracker.server.logs import REQUEST_ID, REQUEST_ID_HEADER
from jobtracker.server.metrics import STREAM, waiting
from jobtracker.store.base import JobView
from jobtracker.store.feed import Wake

#: The last thing a stream sends when the server stops: the client reconnects (to another server)
#: with `Last-Event-ID` and misses nothing.
SHUTTING_DOWN = b": server shutting down, reconnect\n\n"


def _stream_headers() -> dict[str, str]:
    headers = {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        # nginx would otherwise buffer the stream and deliver events late, in lumps.
        "X-Accel-Buffering": "no",
    }
    request_id = REQUEST_ID.get()
    if request_id is not None:  # sent before the middleware sees the response: set here
        headers[REQUEST_ID_HEADER] = request_id
    return headers


def _sse_event(view: JobView, errors_cap: int) -> bytes:
    data = codec.dumps(job_body(view.state, view.errors, errors_cap))
    return b"id: %d\ndata: %s\n\n" % (view.state.version, data)


def _last_event_id(request: web.Request) -> int | None:
    """The version the client saw last, or None; checked before the stream answers anything."""
    if not request.headers.get("Last-Event-ID"):
        return None
    return paging.int_param(request.headers, "Last-Event-ID", 0, 0)


async def stream_job(request: web.Request) -> web.StreamResponse:
    """The body on every change, until the terminal one."""
    key = await request_key(request)
    await job_for(request, key, with_errors=False)
    only_query(request)
    sent = _last_event_id(request)
    settings, feed = request.app[SETTINGS], request.app[FEED]
    read = reader(request, request.match_info["job_id"])
    response = web.StreamResponse(headers=_stream_headers())
    await response.prepare(request)
    try:
        with feed.subscribe(request.match_info["job_id"]) as subscription, waiting(STREAM):
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
                    await response.write(SHUTTING_DOWN)
                    break
                if wake is Wake.HEARTBEAT:
                    await response.write(b": heartbeat\n\n")
                else:
                    view = await read()
    except (ConnectionError, JobtrackerError):
        pass  # the client left, or the store went away mid-stream: the stream just ends
    return response
