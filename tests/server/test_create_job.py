"""POST /api/v1/jobs: creation is durable, owned by the key, and idempotent per owner."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from jobtracker.store import Store
from jobtracker.store.keys import IssuedKey


def auth(key: IssuedKey) -> dict[str, str]:
    return {"X-API-Key": key.secret}


async def test_create_returns_201_pending_and_the_job_is_readable(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """A created job answers 201 with its id, and GET finds it PENDING straight away."""
    response = await client.post("/api/v1/jobs", json={"total": 3}, headers=auth(owner_key))
    assert response.status == 201
    body = await response.json()
    assert body["status"] == "PENDING"
    read = await client.get(f"/api/v1/jobs/{body['job_id']}", headers=auth(owner_key))
    assert read.status == 200


async def test_create_without_a_body_works(client: TestClient, owner_key: IssuedKey) -> None:
    """Every creation field is optional, the body too."""
    response = await client.post("/api/v1/jobs", headers=auth(owner_key))
    assert response.status == 201


async def test_same_id_by_the_same_owner_is_200_with_the_existing_job(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """Retrying a creation is safe: the second call returns the job, and nothing more is written."""
    first = await client.post("/api/v1/jobs", json={"job_id": "j-1"}, headers=auth(owner_key))
    again = await client.post("/api/v1/jobs", json={"job_id": "j-1"}, headers=auth(owner_key))
    assert (first.status, again.status) == (201, 200)
    assert await again.json() == {"job_id": "j-1", "status": "PENDING"}
    assert len(await store.read_log()) == 1


async def test_same_id_by_another_owner_is_409(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey, store: Store
) -> None:
    """Nobody can take over a job id someone else created."""
    await client.post("/api/v1/jobs", json={"job_id": "j-1"}, headers=auth(owner_key))
    response = await client.post("/api/v1/jobs", json={"job_id": "j-1"}, headers=auth(other_key))
    assert response.status == 409
    assert "job_id" in (await response.json())["detail"]
    assert len(await store.read_log()) == 1


async def test_creation_needs_a_valid_key(client: TestClient) -> None:
    """No key, no job."""
    response = await client.post("/api/v1/jobs", json={})
    assert response.status == 401


async def test_bad_creation_body_is_refused_and_writes_nothing(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """Malformed JSON is 400, a bad field 422 naming it; neither writes anything."""
    bad_json = await client.post("/api/v1/jobs", data=b"{nope", headers=auth(owner_key))
    bad_field = await client.post("/api/v1/jobs", json={"total": -5}, headers=auth(owner_key))
    assert (bad_json.status, await bad_json.json()) == (400, {"detail": "Body is not valid JSON"})
    assert bad_field.status == 422
    assert (await bad_field.json())["detail"].startswith("total:")
    assert await store.read_log() == []
