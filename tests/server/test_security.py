"""One owner's key never reads, writes or learns about another owner's job; keys never leak."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.store import Store
from jobtracker.store.keys import IssuedKey, issue_key


async def create(client: TestClient, key: IssuedKey, job_id: str) -> None:
    response = await client.post(
        "/api/v1/jobs", json={"job_id": job_id}, headers={"X-API-Key": key.secret}
    )
    assert response.status == 201


async def test_another_owner_cannot_append_and_nothing_is_written(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey, store: Store
) -> None:
    """Appending to someone else's job is the seed's 403, and the log does not move."""
    await create(client, owner_key, "mine")
    before = await store.read_log()
    response = await client.post(
        "/api/v1/jobs/mine/events",
        json=[{"type": "failed", "error": "sabotage"}],
        headers={"X-API-Key": other_key.secret},
    )
    assert response.status == 403
    assert await response.json() == {"detail": "Access denied to this job"}
    assert await store.read_log() == before


async def test_worker_key_may_append_to_any_job_but_not_read_it(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A `worker`-scope key reports progress; reading results stays with the owner."""
    worker = await issue_key(store, "celery", scope="worker", owners=[owner_key.record.key_id])
    await create(client, owner_key, "job-w")
    appended = await client.post(
        "/api/v1/jobs/job-w/events", json=[{"type": "started"}],
        headers={"X-API-Key": worker.secret},
    )
    read = await client.get("/api/v1/jobs/job-w", headers={"X-API-Key": worker.secret})
    assert appended.status == 200
    assert read.status == 403


async def test_keys_never_reach_the_logs(
    client: TestClient, owner_key: IssuedKey, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a good key nor a wrong one is ever written to a log line."""
    wrong = "uc_live_" + "W" * 43
    caplog.set_level(logging.DEBUG)
    await create(client, owner_key, "logged")
    for secret in (owner_key.secret, wrong):
        await client.get("/api/v1/jobs/logged", headers={"X-API-Key": secret})
        await client.get("/api/v1/jobs/../etc", headers={"X-API-Key": secret})
    assert caplog.records, "the access log should have recorded the requests"
    assert owner_key.secret not in caplog.text
    assert wrong not in caplog.text


async def test_ownership_holds_for_every_batch_of_a_busy_job(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey, store: Store
) -> None:
    """The server remembers who owns a job after its first append; later batches by another key
    are still refused with the seed's 403, whether the job was made over HTTP or by the SDK."""
    from jobtracker.domain.events import Created

    await store.create_job("made-by-sdk", Created(owner=owner_key.record.key_id))
    await create(client, owner_key, "made-over-http")
    for job_id in ("made-by-sdk", "made-over-http"):
        for row in range(3):
            mine = await client.post(
                f"/api/v1/jobs/{job_id}/events",
                json=[{"type": "row_succeeded", "row": row, "email": "a@uni.edu",
                       "internal": True}],
                headers={"X-API-Key": owner_key.secret},
            )
            assert mine.status == 200
        before = await store.read_log()
        theirs = await client.post(
            f"/api/v1/jobs/{job_id}/events", json=[{"type": "failed", "error": "sabotage"}],
            headers={"X-API-Key": other_key.secret},
        )
        assert theirs.status == 403
        assert await theirs.json() == {"detail": "Access denied to this job"}
        assert await store.read_log() == before
