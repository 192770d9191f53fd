"""A job's events: append a batch, read the history, page through the row errors."""

from __future__ import annotations

from aiohttp import web

from jobtracker.domain import codec, paging
from jobtracker.domain.errors import InvalidInput, JobNotFound, PayloadTooLarge
from jobtracker.server.common import (
    FEED,
    OWNERS,
    SETTINGS,
    STORE,
    check_access,
    job_for,
    json_body,
    json_response,
    missing_job,
    only_query,
    request_key,
)
from jobtracker.server.metrics import count_appended
from jobtracker.store.base import ApiKey


async def _appendable_job(request: web.Request, key: ApiKey) -> str:
    """The path's job id once this key may append to it; the owner is read once per job."""
    job_id = request.match_info["job_id"]
    owner = request.app[OWNERS].get(job_id)
    if owner is None:
        owner = (await job_for(request, key, workers_too=True, with_errors=False)).state.owner
        request.app[OWNERS].put(job_id, owner)
    check_access(owner, key, workers_too=True)
    return job_id


async def append_events(request: web.Request) -> web.Response:
    """`POST /api/v1/jobs/{job_id}/events`: append a batch atomically."""
    key = await request_key(request)
    job_id = await _appendable_job(request, key)
    data = await json_body(request, empty=None)
    limit = request.app[SETTINGS].max_events
    if isinstance(data, list) and len(data) > limit:
        raise PayloadTooLarge(f"Batch has {len(data)} events; the limit is {limit}")
    items = codec.decode_events(data)
    if not items:
        raise InvalidInput("events: the batch is empty")
    try:
        result = await request.app[STORE].append(job_id, items)
    except JobNotFound:  # owner held here, job pruned since: 410 to its owner
        request.app[OWNERS].forget(job_id)
        raise await missing_job(request, key, job_id, workers_too=True) from None
    request.app[FEED].poke()
    count_appended(result.appended)
    answer = {"appended": result.appended, "duplicates": result.duplicates,
              "version": result.version}
    if result.cancel_requested:  # an extension: absent unless the owner asked to cancel
        answer["cancel_requested"] = True
    return json_response(answer)


async def job_events(request: web.Request) -> web.Response:
    """`GET /api/v1/jobs/{job_id}/events`: the job's history, oldest first, a page at a time."""
    key = await request_key(request)
    view = await job_for(request, key, with_errors=False)
    only_query(request, "after_version", "limit")
    after = paging.int_param(request.query, "after_version", 0, 0)
    limit = paging.page_limit(request.query)
    found = await request.app[STORE].read_job_events(view.state.job_id, after, limit + 1)
    return json_response(paging.events_page(view.state.job_id, found, limit))


async def job_errors(request: web.Request) -> web.Response:
    """`GET /api/v1/jobs/{job_id}/errors`: every row error, in row order, a page at a time."""
    key = await request_key(request)
    view = await job_for(request, key, with_errors=False)
    only_query(request, "after_row", "limit")
    after = paging.int_param(request.query, "after_row", -1, -1)
    limit = paging.page_limit(request.query)
    found = await request.app[STORE].read_job_errors(view.state.job_id, after, limit + 1)
    return json_response(paging.errors_page(view.state.job_id, found, limit, view.state.failed))
