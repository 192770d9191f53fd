"""`POST /api/v1/jobs/{job_id}/events`: what a worker sees for every answer, and that a refused
batch leaves the log exactly as it was."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import SqliteStore, Store
from jobtracker.store.keys import IssuedKey, issue_key

Log = list[tuple[int, str, str]]


async def log_of(store: Store, job_id: str) -> Log:
    return [(e.version, e.event_id, e.event.TYPE) for e in await store.read_job_events(job_id)]


def row_ok(row: int, event_id: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "row_succeeded", "row": row, "email": f"p{row}@uni.edu",
                             "internal": True}
    if event_id is not None:
        event["event_id"] = event_id
    return event


@pytest.fixture
async def job_id(store: Store, owner_key: IssuedKey) -> str:
    """A job owned by `owner_key`, created with total 50."""
    await store.create_job("job-1", Created(owner=owner_key.record.key_id, total=50))
    return "job-1"


async def post(client: TestClient, key: IssuedKey | None, job_id: str, body: Any) -> Any:
    headers = {"X-API-Key": key.secret} if key is not None else {}
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await client.post(f"/api/v1/jobs/{job_id}/events", data=data, headers=headers)


async def refused(
    client: TestClient, store: Store, key: IssuedKey | None, job_id: str, body: Any
) -> tuple[int, str]:
    """Post `body`, check the log did not move, return the status and the detail."""
    before = await log_of(store, job_id)
    response = await post(client, key, job_id, body)
    detail: str = (await response.json())["detail"]
    assert await log_of(store, job_id) == before
    return response.status, detail


async def test_append_answers_counts_and_version(
    client: TestClient, store: Store, owner_key: IssuedKey, job_id: str
) -> None:
    """A good batch is written whole and the answer says how many events and the new version."""
    response = await post(client, owner_key, job_id, [{"type": "started"}, row_ok(1), row_ok(2)])
    assert response.status == 200
    assert await response.json() == {"appended": 3, "duplicates": 0, "version": 4}
    assert [t for _, _, t in await log_of(store, job_id)] == [
        "created", "started", "row_succeeded", "row_succeeded"]


async def test_resent_events_count_as_duplicates_once(
    client: TestClient, store: Store, owner_key: IssuedKey, job_id: str
) -> None:
    """Re-sending events with the same event_id records them once and reports duplicates."""
    batch = [row_ok(1, "e-1"), row_ok(2, "e-2")]
    await post(client, owner_key, job_id, batch)
    again = await post(client, owner_key, job_id, [*batch, row_ok(3, "e-3")])
    assert await again.json() == {"appended": 1, "duplicates": 2, "version": 4}
    assert len(await log_of(store, job_id)) == 4


async def test_worker_scope_key_may_append_to_any_job(
    client: TestClient, store: Store, job_id: str
) -> None:
    """An all-owners `worker` key appends to jobs it does not own."""
    worker = await issue_key(store, "celery", scope="worker", all_owners=True)
    response = await post(client, worker, job_id, [{"type": "started"}])
    assert response.status == 200


async def test_another_owners_key_is_denied(
    client: TestClient, store: Store, other_key: IssuedKey, job_id: str
) -> None:
    """An owner key cannot write to someone else's job."""
    assert await refused(client, store, other_key, job_id, [{"type": "started"}]) == (
        403, "Access denied to this job")


async def test_missing_key_is_401(client: TestClient, store: Store, job_id: str) -> None:
    """No X-API-Key header: 401 and nothing written."""
    status, _ = await refused(client, store, None, job_id, [{"type": "started"}])
    assert status == 401


async def test_unknown_job_is_404(client: TestClient, owner_key: IssuedKey) -> None:
    """Appending to a job nobody created is 404, not an implicit creation."""
    response = await post(client, owner_key, "nobody-made-this", [{"type": "started"}])
    assert (response.status, await response.json()) == (404, {"detail": "Job not found"})


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"[{not json", "Body is not valid JSON"),
        ({"type": "started"}, "Body must be a JSON array of events"),
        (b"", "Body must be a JSON array of events"),
    ],
)
async def test_unreadable_body_is_400(
    client: TestClient, store: Store, owner_key: IssuedKey, job_id: str, body: Any, detail: str
) -> None:
    """A body that is not a JSON array is 400 with a detail saying so."""
    assert await refused(client, store, owner_key, job_id, body) == (400, detail)


@pytest.mark.parametrize(
    ("bad_event", "detail_start"),
    [
        ({"type": "row_succeeded", "email": "a@b.c", "internal": True}, "events[1].row: "),
        ({"type": "row_succeeded", "row": "5", "email": "a@b.c", "internal": True},
         "events[1].row: "),
        ({"type": "row_failed", "row": -1, "email": "a@b.c", "error": "x"}, "events[1].row: "),
        ({"type": "progress", "current": 9, "total": 5}, "events[1].current: "),
        ({"type": "teleported"}, "events[1].type: "),
        ({"type": "started", "colour": "red"}, "events[1].colour: "),
        ({"type": "created", "owner": "key_x"}, "events[1].type: "),
        ({"type": "started", "event_id": 7}, "events[1].event_id: "),
    ],
)
async def test_bad_event_is_422_naming_index_and_field(
    client: TestClient,
    store: Store,
    owner_key: IssuedKey,
    job_id: str,
    bad_event: dict[str, Any],
    detail_start: str,
) -> None:
    """One bad event refuses the whole batch with a detail naming its index and field."""
    status, detail = await refused(client, store, owner_key, job_id, [row_ok(1), bad_event])
    assert status == 422
    assert detail.startswith(detail_start)


async def test_event_for_a_finished_job_is_409(
    client: TestClient, store: Store, owner_key: IssuedKey, job_id: str
) -> None:
    """After `succeeded` the job takes no more events; an exact re-send is still a duplicate."""
    done = {"type": "succeeded", "event_id": "done"}
    await post(client, owner_key, job_id, [done])
    status, detail = await refused(client, store, owner_key, job_id, [row_ok(1)])
    assert status == 409
    assert "SUCCESS" in detail
    resend = await post(client, owner_key, job_id, [done])
    assert await resend.json() == {"appended": 0, "duplicates": 1, "version": 2}


async def test_second_outcome_for_a_row_is_409(
    client: TestClient, store: Store, owner_key: IssuedKey, job_id: str
) -> None:
    """A row has one outcome: a second one (new event_id) is refused, naming the row."""
    await post(client, owner_key, job_id, [row_ok(7)])
    failed = {"type": "row_failed", "row": 7, "email": "p7@uni.edu", "error": "late"}
    status, detail = await refused(client, store, owner_key, job_id, [row_ok(8), failed])
    assert status == 409
    assert detail.startswith("events[1].row: row 7")


async def test_reused_event_id_with_other_content_is_409(
    client: TestClient, store: Store, owner_key: IssuedKey, job_id: str
) -> None:
    """An event_id names one event forever; reusing it for another is refused."""
    await post(client, owner_key, job_id, [row_ok(1, "e-1")])
    status, detail = await refused(client, store, owner_key, job_id, [row_ok(2, "e-1")])
    assert status == 409
    assert detail.startswith("events[0].event_id: ")


@pytest.fixture
async def small_limits_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path
) -> tuple[TestClient, Store]:
    """A server whose limits are 3 events and 2 KiB per append."""
    store = SqliteStore(str(tmp_path / "limits.db"))
    settings = Settings(max_events=3, max_body_bytes=2048)
    return await aiohttp_client(create_app(settings, store=store)), store


async def test_too_many_events_is_413(small_limits_client: tuple[TestClient, Store]) -> None:
    """A batch over the configured event count is 413 and nothing is written."""
    client, store = small_limits_client
    key = await issue_key(store, "owner")
    await store.create_job("big", Created(owner=key.record.key_id))
    body = [row_ok(n) for n in range(4)]
    assert await refused(client, store, key, "big", body) == (
        413, "Batch has 4 events; the limit is 3")


async def test_too_large_body_is_413(small_limits_client: tuple[TestClient, Store]) -> None:
    """A body over the configured byte limit is 413 and nothing is written."""
    client, store = small_limits_client
    key = await issue_key(store, "owner")
    await store.create_job("big", Created(owner=key.record.key_id))
    status, detail = await refused(client, store, key, "big", [{"type": "started"}] * 2 + [
        {"type": "failed", "error": "x" * 3000}])
    assert status == 413
    assert "2048" in detail


async def test_concurrent_appends_commit_in_groups_and_a_bad_one_fails_alone(
    aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path
) -> None:
    """Many clients at once share commits; the one refused request does not sink the others."""
    store = SqliteStore(str(tmp_path / "group.db"))
    client = await aiohttp_client(create_app(Settings(), store=store))
    key = await issue_key(store, "owner")
    await store.create_job("busy", Created(owner=key.record.key_id))
    await post(client, key, "busy", [row_ok(0)])
    batches = [[row_ok(n)] for n in range(1, 40)] + [[row_ok(0, "again-row-0")]]
    responses = await asyncio.gather(*(post(client, key, "busy", b) for b in batches))
    assert [r.status for r in responses] == [200] * 39 + [409]
    versions = sorted([(await r.json())["version"] for r in responses[:-1]])
    assert versions == list(range(3, 42))
    assert store.committer.groups < store.committer.requests
    assert len(await log_of(store, "busy")) == 41


async def test_event_id_of_another_job_is_409(
    client: TestClient, store: Store, owner_key: IssuedKey, job_id: str
) -> None:
    """An event already recorded on one job, sent again to another job, is refused with 409
    naming the id, and the second job's log does not move."""
    await store.create_job("job-2", Created(owner=owner_key.record.key_id, total=50))
    await post(client, owner_key, job_id, [row_ok(1, "e-1")])
    status, detail = await refused(client, store, owner_key, "job-2", [row_ok(1, "e-1")])
    assert status == 409
    assert detail.startswith("events[0].event_id: ")
