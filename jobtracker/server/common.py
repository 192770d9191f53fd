"""What every handler shares: the app's typed keys, JSON responses, the key and access checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from jobtracker.domain import codec
from jobtracker.domain.errors import (
    AccessDenied,
    InvalidInput,
    JobExpired,
    JobNotFound,
    JobtrackerError,
    MalformedRequest,
    RequestTimeout,
)
from jobtracker.domain.events import is_valid_job_id
from jobtracker.server.bodycache import CommitGate, FinishedBodies, JobOwners, RunningBodies
from jobtracker.server.protocol import decoded_body
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.base import ApiKey, JobView
from jobtracker.store.feed import ChangeFeed
from jobtracker.store.keys import authenticate

STORE: web.AppKey[Store] = web.AppKey("jobtracker_store")
FEED = web.AppKey("jobtracker_change_feed", ChangeFeed)
SETTINGS = web.AppKey("jobtracker_settings", Settings)
FINISHED = web.AppKey("jobtracker_finished_bodies", FinishedBodies)
OWNERS = web.AppKey("jobtracker_job_owners", JobOwners)
GATE = web.AppKey("jobtracker_commit_gate", CommitGate)
#: Running jobs' bodies as last encoded, reused for a view read again unchanged.
ENCODED = web.AppKey("jobtracker_encoded_bodies", RunningBodies)
#: The header a caller's API key comes in (the seed's).
API_KEY_HEADER = "X-API-Key"


def json_response(body: Any, status: int = 200) -> web.Response:
    """A JSON response encoded with orjson."""
    return encoded_response(codec.dumps(body), status)


def encoded_response(body: bytes, status: int = 200) -> web.Response:
    """A response for JSON that is encoded already."""
    return web.Response(body=body, status=status, content_type="application/json")


async def request_key(request: web.Request, ticket: int | None = None) -> ApiKey:
    """The caller's key from `X-API-Key` (401 when missing, unknown or revoked).

    With `ticket` (what the request's `CommitGate.look` gave) it comes from memory while nothing
    was committed: worth it for reads; a write moves the mark anyway.
    """
    secret = request.headers.get(API_KEY_HEADER)
    if ticket is None or secret is None:
        return await authenticate(request.app[STORE], secret)
    gate = request.app[GATE]
    key = gate.key(secret)
    if key is None:
        key = await authenticate(request.app[STORE], secret)
        gate.remember_key(ticket, secret, key)
    return key


async def job_for(
    request: web.Request, key: ApiKey, *, workers_too: bool = False, with_errors: bool = True,
    read: Callable[[str, int], Awaitable[JobView | None]] | None = None,
) -> JobView:
    """The job named in the path, if this key may touch it: 404 before 403, as the seed says.

    `read` reads it (default: the store's `get_job`; a GET may read a replica, `server/replica`).

    A worker key bound to some owners gets the same 403 for an id nobody created as for another
    owner's job: which ids exist outside its owners is none of its business.
    """
    job_id = request.match_info["job_id"]
    if not is_valid_job_id(job_id):
        raise JobNotFound()
    errors_limit = request.app[SETTINGS].errors_cap if with_errors else 0
    view = await (read or request.app[STORE].get_job)(job_id, errors_limit)
    if view is None:
        raise await missing_job(request, key, job_id, workers_too=workers_too)
    check_access(view.state.owner, key, workers_too=workers_too)
    return view


async def missing_job(
    request: web.Request, key: ApiKey, job_id: str, *, workers_too: bool = False
) -> JobtrackerError:
    """Why a job id has no job: 410 to the owner of a job retention removed (403 to anyone
    else, as before it went), else 404 (403 to a bound worker key)."""
    tombstone = await request.app[STORE].find_tombstone(job_id)
    if tombstone is not None:
        return JobExpired() if may_access(tombstone.owner, key, workers_too) else _denied()
    return _denied() if key.bound else JobNotFound()


def may_access(owner: str, key: ApiKey, workers_too: bool = False) -> bool:
    """Whether `key` owns the job (or, where workers may act, is a worker key for its owner)."""
    return owner == key.key_id or (workers_too and key.acts_for(owner))


def check_access(owner: str, key: ApiKey, *, workers_too: bool = False) -> None:
    """403 unless `may_access` (written out: it runs on every GET)."""
    if owner != key.key_id and not (workers_too and key.acts_for(owner)):
        raise _denied()


def _denied() -> AccessDenied:
    return AccessDenied("Access denied to this job")


def only_query(request: web.Request, *allowed: str) -> None:
    """Refuse unknown query parameters: a typo like `?wiat=30` must not be silently ignored.

    Nor is a parameter given twice (`?wait=1&wait=70`): which one the client meant is a guess.
    """
    query = request.query
    names = set(query)
    unknown = sorted(names - set(allowed))
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown query parameter")
    if len(names) != len(query):
        repeated = sorted(name for name in names if len(query.getall(name)) > 1)
        raise MalformedRequest(f"{repeated[0]}: given more than once; give it once")


async def read_body(request: web.Request) -> bytes:
    """The raw body, within `Settings.body_timeout` of the handler asking for it."""
    if request.content.is_eof():  # the whole body came with the headers: nothing to wait for
        return await request.read()
    limit = request.app[SETTINGS].body_timeout
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(f"Request body not received within {limit:g} s") from None


async def json_body(request: web.Request, *, empty: Any) -> Any:
    """The request's JSON body, or `empty` when there is none (408 if it does not arrive)."""
    coding, limit = request.headers.get("Content-Encoding"), request.app[SETTINGS].max_body_bytes
    body = decoded_body(await read_body(request), coding, limit)
    return codec.parse_json(body) if body.strip() else empty
