"""GET /api/v1/jobs/{job_id}: the seed's bodies, byte for byte, and who may read them."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import (
    EmailSent,
    Event,
    Failed,
    NewEvent,
    ProgressReported,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    new_event_id,
)
from jobtracker.store import Store
from jobtracker.store.keys import IssuedKey

SEED_SUCCESS_RESULT = {
    "total": 50,
    "successful": 48,
    "failed": 2,
    "errors": [
        {"row": 12, "email": "invalido@test", "error": "Invalid email: invalido@test"},
        {"row": 37, "email": "duplicado@test.com", "error": "Calificacion invalida"},
    ],
    "emails_sent": 48,
    "emails_failed": 0,
    "internal_count": 30,
    "external_count": 18,
}


async def create(client: TestClient, key: IssuedKey, **body: Any) -> str:
    response = await client.post("/api/v1/jobs", json=body, headers={"X-API-Key": key.secret})
    assert response.status == 201, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def report(store: Store, job_id: str, *events: Event) -> None:
    await store.append(job_id, [NewEvent(new_event_id(), e) for e in events])


async def get(client: TestClient, job_id: str, key: IssuedKey | str | None) -> tuple[int, Any]:
    secret = key.secret if isinstance(key, IssuedKey) else key
    headers = {} if secret is None else {"X-API-Key": secret}
    response = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    assert response.content_type == "application/json"
    return response.status, await response.json()


def seed_job_events() -> list[Event]:
    events: list[Event] = [Started()]
    internal_left = 30
    for row in range(1, 51):
        if row == 12:
            events.append(RowFailed(row, "invalido@test", "Invalid email: invalido@test"))
        elif row == 37:
            events.append(RowFailed(row, "duplicado@test.com", "Calificacion invalida"))
        else:
            events.append(RowSucceeded(row, f"p{row}@uni.edu", internal=internal_left > 0))
            events.append(EmailSent(row, f"p{row}@uni.edu"))
            internal_left -= 1
    return events


async def test_pending_body_is_job_id_and_status(client: TestClient, owner_key: IssuedKey) -> None:
    """A fresh job reads `{"job_id", "status": "PENDING"}` and nothing more."""
    job_id = await create(client, owner_key, job_id="abc123-task-id", total=50)
    assert await get(client, job_id, owner_key) == (
        200,
        {"job_id": "abc123-task-id", "status": "PENDING"},
    )


async def test_started_body_is_job_id_and_status(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A started job reads `{"job_id", "status": "STARTED"}`."""
    job_id = await create(client, owner_key)
    await report(store, job_id, Started())
    assert await get(client, job_id, owner_key) == (200, {"job_id": job_id, "status": "STARTED"})


async def test_progress_body_matches_the_seed(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """PROGRESS carries the latest progress report, with the seed's default text."""
    job_id = await create(client, owner_key, job_id="abc123-task-id", total=50)
    await report(store, job_id, Started(), ProgressReported(10, 50, "Leyendo CSV"))
    await report(store, job_id, ProgressReported(25, 50))
    assert await get(client, job_id, owner_key) == (
        200,
        {
            "job_id": "abc123-task-id",
            "status": "PROGRESS",
            "progress": {"current": 25, "total": 50, "status": "Procesando fila 25 de 50"},
        },
    )


async def test_success_body_matches_the_seed_exactly(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """The SUCCESS body is the seed's example, keys in the seed's order."""
    job_id = await create(client, owner_key, job_id="abc123-task-id", total=50)
    await report(store, job_id, *seed_job_events(), Succeeded())
    status, body = await get(client, job_id, owner_key)
    assert status == 200
    assert body == {"job_id": "abc123-task-id", "status": "SUCCESS", "result": SEED_SUCCESS_RESULT}
    assert list(body["result"]) == list(SEED_SUCCESS_RESULT)


async def test_failure_body_matches_the_seed(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """FAILURE carries the worker's error and nothing else."""
    job_id = await create(client, owner_key, job_id="abc123-task-id")
    await report(store, job_id, Started(), Failed("Achievement not found"))
    assert await get(client, job_id, owner_key) == (
        200,
        {"job_id": "abc123-task-id", "status": "FAILURE", "error": "Achievement not found"},
    )


@pytest.mark.parametrize(
    "secret", [None, "", "uc_live_" + "x" * 43, "not-even-the-prefix"], ids=repr
)
async def test_missing_or_unknown_key_is_401(
    client: TestClient, owner_key: IssuedKey, secret: str | None
) -> None:
    """No key, or a key we never issued, gets 401 with a detail."""
    job_id = await create(client, owner_key)
    status, body = await get(client, job_id, secret)
    assert status == 401
    assert "API key" in body["detail"]


async def test_revoked_key_is_401_at_once(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """Revocation takes effect on the very next request."""
    job_id = await create(client, owner_key)
    await store.revoke_key(owner_key.record.key_id)
    status, body = await get(client, job_id, owner_key)
    assert (status, body) == (401, {"detail": "Invalid or revoked API key"})


async def test_another_owners_job_is_403_with_the_seed_detail(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """A valid key that did not create the job gets the seed's 403 and nothing of the job."""
    job_id = await create(client, owner_key)
    assert await get(client, job_id, other_key) == (403, {"detail": "Access denied to this job"})


@pytest.mark.parametrize(
    "job_id",
    ["never-created", "x" * 129, "..%2F..%2Fetc", "a%00b", "%27%20OR%201%3D1--", "caf%C3%A9"],
)
async def test_unknown_or_malformed_id_is_404_never_pending(
    client: TestClient, owner_key: IssuedKey, job_id: str
) -> None:
    """Unknown and malformed ids are 404 `Job not found`, never PENDING and never 500."""
    assert await get(client, job_id, owner_key) == (404, {"detail": "Job not found"})
