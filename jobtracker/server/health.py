"""`GET /healthz` and `GET /readyz`: no key, no job data, cheap enough for a probe every second.

`/healthz` says the process runs and answers. `/readyz` says it should get traffic: the store
answers and holds every migration this version knows (one small read of `schema_migrations`,
within `READY_TIMEOUT`), and the server is not shutting down; otherwise 503 with a `detail`.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from jobtracker.domain.errors import JobtrackerError
from jobtracker.server.common import FEED, STORE, json_response
from jobtracker.server.metrics import STORE_ERRORS

#: How long `/readyz` waits for the store: well under a load balancer's usual probe timeout.
READY_TIMEOUT = 2.0


async def healthz(request: web.Request) -> web.Response:
    """`GET /healthz`: 200 `{"status": "ok"}` while the process runs."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """`GET /readyz`: 200 `{"status": "ready"}`, or 503 with what is wrong."""
    feed = request.app.get(FEED)
    if feed is None or feed.closed:
        return _not_ready("The server is shutting down")
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            missing = await request.app[STORE].missing_migrations()
    except TimeoutError:
        STORE_ERRORS.inc()
        return _not_ready(f"The store did not answer within {READY_TIMEOUT:g} s")
    except JobtrackerError as exc:
        STORE_ERRORS.inc()
        return _not_ready(exc.detail)
    if missing:
        return _not_ready(
            f"The store's schema is not current: {', '.join(missing)} not applied "
            "(run `jobtracker migrate`)"
        )
    return json_response({"status": "ready"})


def _not_ready(detail: str) -> web.Response:
    return json_response({"detail": detail}, 503)
