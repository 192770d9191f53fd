"""`GET /api/v1/jobs/{job_id}/stream`: server-sent events, one per change of the job.

A server holds ten thousand streams, so an idle stream must cost a socket and a few hundred bytes,
not a request. Once the handler has checked the key and sent the headers, it hands the connection
over from aiohttp to an `Outlet` (a bare asyncio protocol) and returns: no request, handler task
or parser stays behind. One `StreamHub` per server holds every outlet, grouped by job; when the
change feed says a job changed, the hub reads it once, encodes the event once and writes the same
bytes to every stream of the job. One timer sends every heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator

from aiohttp import web

from jobtracker.domain import codec, paging
from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.projection import job_body
from jobtracker.server.common import FEED, SETTINGS, STORE, job_for, only_query, request_key
from jobtracker.server.logs import REQUEST_ID, REQUEST_ID_HEADER
from jobtracker.server.metrics import STREAM, WAITERS
from jobtracker.store.base import JobView, Store

log = logging.getLogger(__name__)

#: The last thing a stream sends when the server stops: the client reconnects (to another server)
#: with `Last-Event-ID` and misses nothing.
SHUTTING_DOWN = b": server shutting down, reconnect\n\n"
HEARTBEAT = b": heartbeat\n\n"
RETRY = b"retry: 2000\n\n"
#: The end of a chunked body: written before an outlet closes the connection.
LAST_CHUNK = b"0\r\n\r\n"

_OPEN_STREAMS = WAITERS.labels(STREAM)


def _stream_headers() -> dict[str, str]:
    headers = {
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        # nginx would otherwise buffer the stream and deliver events late, in lumps.
        "X-Accel-Buffering": "no",
    }
    request_id = REQUEST_ID.get()
    if request_id is not None:  # sent before the route's wrapper sees the response: set here
        headers[REQUEST_ID_HEADER] = request_id
    return headers


def _last_event_id(request: web.Request) -> int:
    """The version the client saw last, or 0; checked before the stream answers anything."""
    if not request.headers.get("Last-Event-ID"):
        return 0
    return paging.int_param(request.headers, "Last-Event-ID", 0, 0)


async def stream_job(request: web.Request) -> web.StreamResponse:
    """The body on every change, until the terminal one."""
    key = await request_key(request)
    await job_for(request, key, with_errors=False)
    only_query(request)
    seen = _last_event_id(request)
    app = request.app
    hub = app[FEED].listener(
        StreamHub, lambda: StreamHub(app[STORE], app[SETTINGS].errors_cap, app[FEED].heartbeat)
    )
    response = web.StreamResponse(headers=_stream_headers())
    await response.prepare(request)
    try:
        await response.write(RETRY)  # the headers go with it
        await hub.adopt(request, response, seen)
    except ConnectionError:
        pass  # the client left before its stream began
    return response


class Frame:
    """One thing to send, encoded once for every stream of a job: as is, and as an HTTP chunk."""

    __slots__ = ("chunk", "data", "final", "version")

    def __init__(self, data: bytes, version: int = 0, *, final: bool = False) -> None:
        self.data = data
        self.chunk = b"%x\r\n%s\r\n" % (len(data), data)
        self.version = version
        #: Sent even to a stream that is behind: the stream ends after it.
        self.final = final


_HEARTBEAT_FRAME = Frame(HEARTBEAT)
_SHUTTING_DOWN_FRAME = Frame(SHUTTING_DOWN, final=True)


def _event_frame(view: JobView, errors_cap: int) -> Frame:
    data = codec.dumps(job_body(view.state, view.errors, errors_cap))
    return Frame(b"id: %d\ndata: %s\n\n" % (view.state.version, data), view.state.version,
                 final=view.state.status.is_terminal)


class Outlet(asyncio.Protocol):
    """One stream's connection once aiohttp has let go of it: writes frames, notes the client
    leaving. What a client sends on it is ignored (the stream is all the answer it gets)."""

    __slots__ = ("chunked", "group", "last_sent", "paused", "sent", "transport")

    def __init__(self, transport: asyncio.Transport, group: JobStreams, chunked: bool,
                 seen: int) -> None:
        self.transport: asyncio.Transport | None = transport
        self.group = group
        self.chunked = chunked
        #: The newest version this client holds: only newer events are sent to it.
        self.sent = seen
        self.last_sent = time.monotonic()
        self.paused = False

    def send(self, frame: Frame, now: float) -> None:
        """Write `frame` unless the client already holds its version or cannot keep up.

        A client that cannot keep up (the kernel's buffer and the transport's are full) skips
        events: it is sent the newest once it has read what is pending, as a stream that reads
        the job after several changes sends only the last.
        """
        transport = self.transport
        if transport is None or (frame.version and frame.version <= self.sent):
            return
        if self.paused and not frame.final:
            return
        transport.write(frame.chunk if self.chunked else frame.data)
        self.last_sent = now
        if frame.version:
            self.sent = frame.version

    def end(self, frame: Frame | None = None) -> None:
        """Send `frame` if given, end the body and close the connection (once what is
        buffered has gone)."""
        transport = self.transport
        if transport is None:
            return
        if frame is not None:
            self.send(frame, time.monotonic())
        if self.chunked:
            transport.write(LAST_CHUNK)
        transport.close()
        self.transport = None

    def pause_writing(self) -> None:
        """The client is not reading: skip events until it has caught up."""
        self.paused = True

    def resume_writing(self) -> None:
        """The client caught up: send the newest event if it has not had it."""
        self.paused = False
        latest = self.group.latest
        if latest is not None:
            self.send(latest, time.monotonic())

    def data_received(self, data: bytes) -> None:
        """Ignored: nothing a client sends changes its stream."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection closed (the client left, or the stream ended): forget the stream."""
        self.transport = None
        self.group.discard(self)
        _OPEN_STREAMS.dec()


class JobStreams:
    """The open streams of one job, and the newest event encoded for them."""

    __slots__ = ("hub", "job_id", "latest", "outlets")

    def __init__(self, hub: StreamHub, job_id: str) -> None:
        self.hub = hub
        self.job_id = job_id
        self.outlets: set[Outlet] = set()
        self.latest: Frame | None = None

    def frame(self, view: JobView, errors_cap: int) -> Frame:
        """The event for `view`, encoded once per version (kept while it is the newest)."""
        if self.latest is not None and self.latest.version == view.state.version:
            return self.latest
        frame = _event_frame(view, errors_cap)
        if self.latest is None or frame.version > self.latest.version:
            self.latest = frame
        return frame

    def discard(self, outlet: Outlet) -> None:
        """Forget a stream that ended."""
        self.outlets.discard(outlet)
        if not self.outlets:
            self.hub.forget(self)

    def end(self, frame: Frame | None = None) -> None:
        """End every stream of the job, after `frame` if given."""
        outlets, self.outlets = self.outlets, set()
        self.hub.forget(self)
        for outlet in outlets:
            outlet.end(frame)


class StreamHub:
    """Every event stream of this server: told by the change feed which jobs changed, it reads
    each once and writes the same bytes to all of that job's streams."""

    def __init__(self, store: Store, errors_cap: int, heartbeat: float) -> None:
        self._store = store
        self._errors_cap = errors_cap
        self._heartbeat = heartbeat
        self._groups: dict[str, JobStreams] = {}
        # Jobs changed and not yet read, in the order they changed (a dict as an ordered set).
        self._dirty: dict[str, None] = {}
        self._woken: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    async def adopt(self, request: web.Request, response: web.StreamResponse, seen: int) -> None:
        """Send the job's current body and take the request's connection over from aiohttp.

        The stream joins its job's group before the job is read: from then on no change goes
        unnoticed, so this is where the stream starts. Nothing is awaited once aiohttp has let
        go of the connection: a server that cancels handlers of lost connections would cancel
        this one.
        """
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client left")
        if self._closed:
            raise ConnectionResetError("the server is stopping")  # its streams have ended
        job_id = request.match_info["job_id"]
        group = self._groups.get(job_id) or JobStreams(self, job_id)
        outlet = Outlet(transport, group, response.headers.get("Transfer-Encoding") == "chunked",
                        seen)
        self._join(group, outlet)
        try:
            view = await self._store.get_job(job_id, self._errors_cap)
        except JobtrackerError:
            view = None  # the store went away: the stream just ends, the client reconnects
        if outlet not in group.outlets or transport.is_closing():
            group.discard(outlet)
            return  # ended meanwhile (the client left, the server stopped, the job finished)
        transport.set_protocol(outlet)
        # aiohttp forgets the connection without closing it (and, once this handler returns, the
        # request): its attempt to end the body then fails as if the client had left, and is
        # ignored.
        request.protocol.transport = None
        request.protocol.connection_lost(None)
        _OPEN_STREAMS.inc()  # down again when the outlet's connection closes
        self._first_event(group, outlet, view, seen)

    def _join(self, group: JobStreams, outlet: Outlet) -> None:
        self._groups[group.job_id] = group
        group.outlets.add(outlet)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="jobtracker-streams")
            self._timer = asyncio.get_running_loop().call_later(self._beat_every(), self._beat)

    def _first_event(self, group: JobStreams, outlet: Outlet, view: JobView | None,
                     seen: int) -> None:
        if view is None:
            group.discard(outlet)
            outlet.end()
            return
        if outlet.sent == seen and view.state.version < seen:
            outlet.sent = 0  # the client saw a version this job has not reached: start over
        frame = group.frame(view, self._errors_cap)
        outlet.send(frame, time.monotonic())
        if frame.final:
            group.discard(outlet)
            outlet.end()

    def changed(self, job_id: str) -> None:
        """The change feed saw `job_id` change: read it soon, if anyone streams it."""
        if job_id in self._groups:
            self._dirty[job_id] = None
            if self._woken is not None and not self._woken.done():
                self._woken.set_result(None)

    def closed(self) -> None:
        """The server is stopping: every stream ends with a message asking to reconnect."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
        for group in list(self._groups.values()):
            group.end(_SHUTTING_DOWN_FRAME)

    def forget(self, group: JobStreams) -> None:
        """A job nobody streams any more."""
        if self._groups.get(group.job_id) is group:
            del self._groups[group.job_id]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._dirty:
                self._woken = loop.create_future()
                await self._woken
            job_id = next(iter(self._dirty))
            del self._dirty[job_id]
            if job_id not in self._groups:
                continue
            try:
                await self._refresh(job_id)
            except Exception:
                # One job's streams end rather than every stream of the server going quiet.
                log.exception("streams of job %s could not be updated; they end", job_id)
                group = self._groups.get(job_id)
                if group is not None:
                    group.end()

    async def _refresh(self, job_id: str) -> None:
        try:
            view = await self._store.get_job(job_id, self._errors_cap)
        except JobtrackerError:
            view = None  # the store went away: the streams just end, their clients reconnect
        group = self._groups.get(job_id)
        if group is None:
            return
        if view is None:
            group.end()
            return
        frame = group.frame(view, self._errors_cap)
        if frame.final:
            group.end(frame)
            return
        now = time.monotonic()
        for outlet in group.outlets:
            outlet.send(frame, now)

    def _beat_every(self) -> float:
        return min(1.0, self._heartbeat / 4)

    def _beat(self) -> None:
        """Send a heartbeat comment on every stream that sent nothing for a whole period."""
        now = time.monotonic()
        due = now - self._heartbeat
        for outlet in self._outlets():
            if outlet.last_sent <= due:
                outlet.send(_HEARTBEAT_FRAME, now)
        self._timer = asyncio.get_running_loop().call_later(self._beat_every(), self._beat)

    def _outlets(self) -> Iterator[Outlet]:
        for group in self._groups.values():
            yield from group.outlets
