"""`serve --read-url` naming a standby that does not answer: the server starts, GETs are
answered by the primary, and the log says once that the replica is not answering."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store.keys import issue_key
from jobtracker.store.postgres import PostgresStore

#: Nothing listens on port 1: every connection to it is refused at once.
NOWHERE = "postgresql://postgres@127.0.0.1:1/postgres"


async def test_gets_are_answered_by_the_primary_while_the_replica_is_down(
    aiohttp_client: Callable[..., Awaitable[TestClient]], pg_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Three GETs of a running job, a replica refusing connections: each is the primary's
    current body (200, never 503), and the warning is logged once, not per GET."""
    store = PostgresStore(pg_url, pool_size=1)
    await store.open()
    try:
        secret = (await issue_key(store, "owner")).secret
    finally:
        await store.close()
    settings = Settings(store_url=pg_url, read_url=NOWHERE, webhooks=False)
    client = await aiohttp_client(create_app(settings))
    headers = {"X-API-Key": secret}
    created = await client.post("/api/v1/jobs", json={"job_id": "job-1", "total": 5},
                                headers=headers)
    assert created.status == 201
    appended = await client.post("/api/v1/jobs/job-1/events", headers=headers,
                                 json=[{"type": "started"}])
    assert appended.status == 200

    with caplog.at_level(logging.WARNING, logger="jobtracker.store.postgres.replica"):
        answers = [await client.get("/api/v1/jobs/job-1?min_version=2", headers=headers)
                   for _ in range(3)]

    assert [answer.status for answer in answers] == [200, 200, 200]
    assert [await answer.json() for answer in answers] == [
        {"job_id": "job-1", "status": "STARTED"}] * 3
    warnings = [r.getMessage() for r in caplog.records if "replica" in r.getMessage()]
    assert len(warnings) == 1
    assert "does not answer" in warnings[0]
