"""Worker keys over HTTP: they act on their owners' jobs only, and learn nothing of the others."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import MemoryStore, Store
from jobtracker.store.base import ApiKey, JobView
from jobtracker.store.keys import IssuedKey, issue_key

DENIED = (403, {"detail": "Access denied to this job"})


def auth(key: IssuedKey) -> dict[str, str]:
    return {"X-API-Key": key.secret}


async def bound_worker(store: Store, *owners: IssuedKey) -> IssuedKey:
    return await issue_key(store, "celery", "worker", owners=[o.record.key_id for o in owners])


async def answer(response: Any) -> tuple[int, Any]:
    return response.status, await response.json()


async def create(client: TestClient, key: IssuedKey, body: dict[str, Any]) -> tuple[int, Any]:
    return await answer(await client.post("/api/v1/jobs", json=body, headers=auth(key)))


async def append(client: TestClient, key: IssuedKey, job_id: str) -> tuple[int, Any]:
    return await answer(await client.post(
        f"/api/v1/jobs/{job_id}/events", json=[{"type": "failed", "error": "x"}], headers=auth(key)
    ))


async def test_bound_worker_appends_to_its_owners_job(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    """A worker key bound to an owner reports on that owner's job."""
    worker = await bound_worker(store, owner_key)
    assert (await create(client, owner_key, {"job_id": "mine"}))[0] == 201
    assert await append(client, worker, "mine") == (200, {"appended": 1, "duplicates": 0,
                                                          "version": 2})


async def test_bound_worker_cannot_tell_another_owners_job_from_a_missing_one(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """Appending to another owner's job and to an id nobody created give the same 403, every
    time, and nothing is written."""
    worker = await bound_worker(store, owner_key)
    assert (await create(client, other_key, {"job_id": "theirs"}))[0] == 201
    before = await store.read_log()
    for job_id in ("theirs", "nobody", "theirs"):  # the second time, the owner is remembered
        assert await append(client, worker, job_id) == DENIED
    assert await store.read_log() == before


async def test_bound_worker_reads_no_job_and_learns_nothing_from_trying(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """Workers report and owners read: every read route answers a bound worker the same 403,
    for its owner's job, another owner's and an id nobody created."""
    worker = await bound_worker(store, owner_key)
    await create(client, owner_key, {"job_id": "mine"})
    await create(client, other_key, {"job_id": "theirs"})
    for job_id in ("mine", "theirs", "nobody"):
        for route in ("", "/events", "/errors", "/stream"):
            read = await client.get(f"/api/v1/jobs/{job_id}{route}", headers=auth(worker))
            assert await answer(read) == DENIED, (job_id, route)


async def test_all_owners_worker_appends_to_any_owners_job(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """An all-owners worker key (platform-internal) reports on every owner's jobs."""
    platform = await issue_key(store, "platform", "worker", all_owners=True)
    for key, job_id in ((owner_key, "mine"), (other_key, "theirs")):
        await create(client, key, {"job_id": job_id})
        assert (await append(client, platform, job_id))[0] == 200
    assert await append(client, platform, "nobody") == (404, {"detail": "Job not found"})


async def test_worker_creates_a_job_for_the_owner_it_names_who_then_reads_it(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """The job a worker key creates with `owner` is that owner's: their key reads it, another
    owner's key does not, and creating it again is the idempotent 200."""
    worker = await bound_worker(store, owner_key, other_key)
    body = {"job_id": "for-owner", "owner": owner_key.record.key_id}
    assert await create(client, worker, body) == (201, {"job_id": "for-owner",
                                                        "status": "PENDING"})
    assert (await create(client, worker, body))[0] == 200
    read = await client.get("/api/v1/jobs/for-owner", headers=auth(owner_key))
    assert await answer(read) == (200, {"job_id": "for-owner", "status": "PENDING"})
    read = await client.get("/api/v1/jobs/for-owner", headers=auth(other_key))
    assert await answer(read) == DENIED
    assert (await append(client, worker, "for-owner"))[0] == 200


async def test_worker_bound_to_one_owner_creates_for_it_without_naming_it(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    """With a single bound owner, `owner` may be left out: the job is that owner's."""
    worker = await bound_worker(store, owner_key)
    assert (await create(client, worker, {"job_id": "default-owner"}))[0] == 201
    read = await client.get("/api/v1/jobs/default-owner", headers=auth(owner_key))
    assert read.status == 200


async def test_worker_bound_to_several_owners_must_name_one(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """Left out by a key bound to two owners, `owner` is a 422 naming it; nothing is created."""
    worker = await bound_worker(store, owner_key, other_key)
    assert await create(client, worker, {"job_id": "whose"}) == (
        422, {"detail": "owner: required: this worker key is bound to several owners"})
    assert await store.get_job("whose", 0) is None


async def test_worker_cannot_create_for_an_owner_outside_its_binding(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """Naming an owner it is not bound to is 403, the same whether that key exists or not."""
    worker = await bound_worker(store, owner_key)
    refused = {"detail": "owner: this worker key is not bound to that owner"}
    for owner in (other_key.record.key_id, "key_nobody"):
        assert await create(client, worker, {"job_id": "stolen", "owner": owner}) == (403, refused)
    assert await store.get_job("stolen", 0) is None


async def test_named_owner_must_be_an_active_owner_key(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """An unknown id, a revoked key or a worker key as `owner` is a 422 naming the field."""
    platform = await issue_key(store, "platform", "worker", all_owners=True)
    await store.revoke_key(other_key.record.key_id)
    refusals = {
        "key_nobody": "owner: no key has the id 'key_nobody'",
        other_key.record.key_id: f"owner: the key '{other_key.record.key_id}' is revoked",
        platform.record.key_id: f"owner: the key '{platform.record.key_id}' is not an owner key",
    }
    for owner, detail in refusals.items():
        assert await create(client, platform, {"owner": owner}) == (422, {"detail": detail})
    assert (await create(client, platform, {"owner": owner_key.record.key_id}))[0] == 201


async def test_worker_bound_to_a_revoked_owner_creates_nothing_for_it(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    """Once its owner's key is revoked, a bound worker key creates no job for it, named or not,
    yet still reports on that owner's existing jobs."""
    worker = await bound_worker(store, owner_key)
    await create(client, owner_key, {"job_id": "running"})
    await store.revoke_key(owner_key.record.key_id)
    revoked = (422, {"detail": f"owner: the key '{owner_key.record.key_id}' is revoked"})
    assert await create(client, worker, {}) == revoked
    assert await create(client, worker, {"owner": owner_key.record.key_id}) == revoked
    assert (await append(client, worker, "running"))[0] == 200


async def test_owner_key_cannot_name_an_owner(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """An owner-scope key that sends `owner` gets a 422 naming it, even when it names itself."""
    refused = (422, {"detail": "owner: only a worker key may name a job's owner"})
    for owner in (other_key.record.key_id, owner_key.record.key_id):
        assert await create(client, owner_key, {"job_id": "j", "owner": owner}) == refused


async def test_all_owners_worker_that_names_no_owner_owns_the_job(
    client: TestClient, store: Store
) -> None:
    """As before bindings existed, an all-owners key naming no owner owns (and reads) the job."""
    platform = await issue_key(store, "platform", "worker", all_owners=True)
    assert (await create(client, platform, {"job_id": "own"}))[0] == 201
    read = await client.get("/api/v1/jobs/own", headers=auth(platform))
    assert read.status == 200


async def test_openapi_documents_the_owner_field(client: TestClient) -> None:
    """The create request's schema lists `owner`, an optional key id."""
    document = await (await client.get("/api/v1/openapi.json")).json()
    create_job = document["components"]["schemas"]["CreateJob"]
    assert create_job["properties"]["owner"]["type"] == ["string", "null"]
    assert "owner" not in create_job["required"]


class CountingStore(MemoryStore):
    """The memory store, counting the reads an append could cost."""

    def __init__(self) -> None:
        super().__init__()
        self.job_reads = 0
        self.key_reads_by_id = 0

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        self.job_reads += 1
        return await super().get_job(job_id, errors_limit)

    async def get_key(self, key_id: str) -> ApiKey | None:
        self.key_reads_by_id += 1
        return await super().get_key(key_id)


async def test_bound_worker_appends_cost_no_extra_reads(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    """The binding comes with the key: a bound worker's batches read the job once and never a
    key by id."""
    store = CountingStore()
    client = await aiohttp_client(create_app(Settings(), store=store))
    owner = await issue_key(store, "alice")
    worker = await bound_worker(store, owner)
    await store.create_job("busy", Created(owner=owner.record.key_id))
    store.key_reads_by_id = 0
    for row in range(5):
        response = await client.post(
            "/api/v1/jobs/busy/events", headers=auth(worker),
            json=[{"type": "row_succeeded", "row": row, "email": "a@uni.edu", "internal": True}],
        )
        assert response.status == 200
    assert (store.job_reads, store.key_reads_by_id) == (1, 0)
