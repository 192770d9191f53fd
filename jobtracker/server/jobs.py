"""Jobs: `POST /api/v1/jobs` and `GET /api/v1/jobs/{job_id}` (with ETag, 304 and `?wait=`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from jobtracker.domain import codec, paging
from jobtracker.domain.errors import AccessDenied, InvalidInput
from jobtracker.domain.events import Created, new_job_id
from jobtracker.domain.projection import job_body
from jobtracker.server.bodycache import FinishedBody, RunningBody
from jobtracker.server.common import (
    API_KEY_HEADER,
    ENCODED,
    FEED,
    FINISHED,
    GATE,
    OWNERS,
    SETTINGS,
    STORE,
    check_access,
    job_for,
    json_body,
    json_response,
    only_query,
    request_key,
)
from jobtracker.server.errors import Answers
from jobtracker.server.metrics import LONG_POLL, waiting
from jobtracker.server.replica import MIN_VERSION, job_read, min_version
from jobtracker.store import Store
from jobtracker.store.base import ApiKey, JobView
from jobtracker.store.keys import check_owner_key


def etag(view: JobView) -> str:
    """The job's entity tag: its version, which moves on every appended event."""
    return f'"{view.state.version}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110 weak comparison of If-None-Match against our ETag."""
    if not if_none_match:
        return False
    tags = (each.strip().removeprefix("W/") for each in if_none_match.split(","))
    return any(each in (tag, "*") for each in tags)


def _wait_seconds(request: web.Request) -> int:
    """`?wait=` (0 when absent), with the rest of the query checked: a bad `min_version` is
    refused whatever the job, before anything is read. Only for a GET with a query string."""
    only_query(request, "wait", MIN_VERSION)
    min_version(request)
    raw = request.query.get("wait")
    limit = request.app[SETTINGS].max_wait
    if raw is None:
        return 0
    seconds = paging.ascii_int(raw)
    if seconds is None or not 0 <= seconds <= limit:
        raise InvalidInput(f"wait: must be a whole number of seconds from 0 to {limit}")
    return seconds


def _freshness_headers(request: web.Request, view: JobView) -> dict[str, str]:
    headers = {"ETag": etag(view), "Cache-Control": "no-cache"}
    if not view.state.status.is_terminal:
        headers["Retry-After"] = str(request.app[FEED].retry_after(view))
    return headers


def reader(request: web.Request, job_id: str) -> Callable[[], Awaitable[JobView | None]]:
    """A function that reads the job's current view (with the body's row errors)."""
    store, cap = request.app[STORE], request.app[SETTINGS].errors_cap
    return lambda: store.get_job(job_id, cap)


def _body(request: web.Request, view: JobView) -> dict[str, object]:
    return job_body(view.state, view.errors, request.app[SETTINGS].errors_cap)


def _body_response(request: web.Request, view: JobView, replays: int) -> web.Response:
    if view.state.status.is_terminal:
        return _finished_response(request, _hold_finished(request, view, replays))
    return _running_response(request, _running_body(request, view))


def _running_body(request: web.Request, view: JobView) -> RunningBody:
    """The running job's body for `view`, encoded again only if the view differs from the one
    last encoded (where every GET reads the store, PostgreSQL, most reads find it unchanged)."""
    encoded = request.app[ENCODED]
    held = encoded.get(view.state.job_id)
    if held is not None and held.view == view:
        return held
    current = RunningBody(view, codec.dumps(_body(request, view)), etag(view))
    encoded.put(current)
    return current


def _running_response(request: web.Request, held: RunningBody) -> web.Response:
    response = web.Response(body=held.body, headers=held.headers)
    response.headers["Retry-After"] = str(request.app[FEED].retry_after(held.view))
    return response


def _hold_finished(request: web.Request, view: JobView, replays: int) -> FinishedBody:
    """The finished job's body, held for later GETs unless a replay was made live since
    `replays` was read, before `view` was (`FinishedBodies.put`)."""
    held = FinishedBody(view.state.owner, codec.dumps(_body(request, view)), etag(view))
    request.app[FINISHED].put(view.state.job_id, held, replays)
    return held


def job_getter(app: web.Application) -> Answers:
    """`GET /api/v1/jobs/{job_id}` for `app`: the seed's body; 304 or a held request with
    If-None-Match.

    A finished job's body is encoded once and served from memory afterwards: it never changes.
    A running job's is served from memory until the job moves (`bodycache.CommitGate`). This is
    the request clients send most (a polling loop), so what every GET needs from the app is
    looked up once, here, and the usual case (no query, a remembered key, a body held) answers at
    once, without a coroutine of its own (`errors.Answers`); any other returns one to await.
    """
    gate, finished = app[GATE], app[FINISHED]
    keys = gate.keys

    def get_job(request: web.Request) -> web.Response | Awaitable[web.Response]:
        ticket = gate.look()  # first: whatever moved before this request arrived must show
        secret = request.headers.get(API_KEY_HEADER)
        key = keys.get(secret) if secret is not None else None
        # What a poll sends: no query to parse, no If-None-Match (a 304, a wait), a known key.
        if key is None or request.query_string or "If-None-Match" in request.headers:
            return _get_job(request, ticket, key)
        job_id = request.match_info["job_id"]
        held: FinishedBody | RunningBody | None = finished.get(job_id)
        if held is not None:
            check_access(held.owner, key)
            return web.Response(body=held.body, headers=held.headers)
        held = gate.body(job_id)
        if held is None:  # not held (on PostgreSQL: no running body ever is): read it
            return _get_unfinished(request, key, ticket, 0, None)
        check_access(held.owner, key)
        return _running_response(request, held)

    return get_job


async def _get_job(request: web.Request, ticket: int, key: ApiKey | None) -> web.Response:
    """A GET that may have to wait: for its key's lookup, the job's read or a change."""
    if key is None:
        key = await request_key(request, ticket)
    wait = _wait_seconds(request) if request.query_string else 0
    job_id = request.match_info["job_id"]
    held = request.app[FINISHED].get(job_id)
    if held is not None:
        check_access(held.owner, key)
        return _finished_response(request, held)
    current = request.app[GATE].body(job_id)
    if current is not None:
        check_access(current.owner, key)
    return await _get_unfinished(request, key, ticket, wait, current)


async def _get_unfinished(
    request: web.Request, key: ApiKey, ticket: int, wait: int, current: RunningBody | None
) -> web.Response:
    """A GET of a job whose finished body is not held: `current`, its running body if held, else
    what the store holds now (a running job's body is held for the next GET)."""
    replays = request.app[FINISHED].replays  # before any read: see `_hold_finished`
    if current is None:
        view = await job_for(request, key, read=job_read(request))
        if view.state.status.is_terminal:
            return _finished_response(request, _hold_finished(request, view, replays))
        current = _running_body(request, view)
        request.app[GATE].hold(ticket, current)
    view = current.view
    if not matches(request.headers.get("If-None-Match"), current.etag):
        return _running_response(request, current)
    if wait:
        read = reader(request, view.state.job_id)
        with waiting(LONG_POLL):
            changed = await request.app[FEED].wait_for_change(
                view.state.job_id, read, view.state.version, wait
            )
        if changed is not None:
            return _body_response(request, changed, replays)
    return web.Response(status=304, headers=_freshness_headers(request, view))


def _finished_response(request: web.Request, held: FinishedBody) -> web.Response:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and matches(if_none_match, held.etag):
        return web.Response(status=304, headers={"ETag": held.etag, "Cache-Control": "no-cache"})
    return web.Response(body=held.body, headers=held.headers)


async def create_job(request: web.Request) -> web.Response:
    """`POST /api/v1/jobs`: create a job owned by the caller's key (or the owner a worker key
    names); idempotent per owner."""
    key = await request_key(request)
    wanted = codec.decode_create_request(await json_body(request, empty={}))
    owner = await _new_job_owner(request.app[STORE], key, wanted.owner)
    heartbeat_timeout = wanted.heartbeat_timeout or request.app[SETTINGS].heartbeat_timeout
    created = Created(owner=owner, total=wanted.total, label=wanted.label,
                      heartbeat_timeout=heartbeat_timeout, timeout=wanted.timeout,
                      labels=wanted.labels)
    state, is_new = await request.app[STORE].create_job(wanted.job_id or new_job_id(), created)
    request.app[OWNERS].put(state.job_id, state.owner)
    body = {"job_id": state.job_id, "status": state.status.value}
    return json_response(body, 201 if is_new else 200)


async def _new_job_owner(store: Store, key: ApiKey, named: str | None) -> str:
    """Who owns a job this key creates: the key itself, or for a worker key the owner it names.

    A bound worker key may leave `owner` out only when it is bound to exactly one owner; an
    all-owners key that leaves it out owns the job itself, as every worker key did before
    bindings existed.
    """
    if key.scope != "worker":
        if named is not None:
            raise InvalidInput("owner: only a worker key may name a job's owner")
        return key.key_id
    if named is None:
        if key.all_owners:
            return key.key_id
        if len(key.owners) != 1:
            raise InvalidInput("owner: required: this worker key is bound to several owners")
        named = key.owners[0]
    if not key.acts_for(named):
        raise AccessDenied("owner: this worker key is not bound to that owner")
    await check_owner_key(store, named)
    return named
