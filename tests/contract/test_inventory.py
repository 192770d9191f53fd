"""Inventory on every store (CONTRACT.md, "Inventory"): a key finds its own jobs by status, label
and time, pages through them with tokens only it can use, and retention removes finished jobs
leaving a tombstone (410 to the owner, 403 to others, the id never reused)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import (
    Created,
    NewEvent,
    RowFailed,
    RowSucceeded,
    Started,
    Succeeded,
    new_event_id,
)
from jobtracker.domain.listing import log_time
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store, replay
from jobtracker.store.base import utc_now
from jobtracker.store.keys import IssuedKey, issue_key
from jobtracker.store.rebuild import Rebuildable


def _auth(key: IssuedKey) -> dict[str, str]:
    return {"X-API-Key": key.secret}


async def _list(client: TestClient, key: IssuedKey, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/api/v1/jobs{query}", headers=_auth(key))
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def _ids(client: TestClient, key: IssuedKey, query: str = "") -> list[str]:
    return [item["job_id"] for item in (await _list(client, key, query))["jobs"]]


async def _append(store: Store, job_id: str, *events: Any) -> None:
    await store.append(job_id, [NewEvent(new_event_id(), event) for event in events])


async def _create(client: TestClient, key: IssuedKey, **body: Any) -> str:
    response = await client.post("/api/v1/jobs", json=body, headers=_auth(key))
    assert response.status == 201, await response.text()
    job_id: str = (await response.json())["job_id"]
    return job_id


async def test_a_key_lists_only_its_own_jobs_newest_first_in_the_contract_shape(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    first = await _create(client, owner_key, job_id="import-1", total=2,
                          labels={"achievement": "42"})
    await _create(client, other_key, job_id="theirs")
    second = await _create(client, owner_key, job_id="import-2")
    await _append(store, first, Started(), RowSucceeded(row=0, email="a@uni.edu", internal=True),
                  RowFailed(row=1, email="b@x", error="bad"))

    body = await _list(client, owner_key)

    assert [item["job_id"] for item in body["jobs"]] == [second, first]
    assert body["next_page_token"] is None
    item = body["jobs"][1]
    assert set(item) == {"job_id", "status", "labels", "created_at", "updated_at",
                         "finished_at", "progress", "counts"}
    assert item["status"] == "PROGRESS"
    assert item["labels"] == {"achievement": "42"}
    assert item["progress"] == {"current": 2, "total": 2}
    assert item["counts"] == {"successful": 1, "failed": 1}
    assert item["finished_at"] is None
    assert len(item["created_at"]) == len("2026-12-04T10:00:00.000Z")
    assert item["created_at"].endswith("Z")
    assert item["updated_at"] >= item["created_at"]
    assert body["jobs"][0]["progress"] is None
    assert body["jobs"][0]["labels"] == {}
    assert await _ids(client, other_key) == ["theirs"]


async def test_a_finished_job_lists_when_it_finished(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    job_id = await _create(client, owner_key)
    await _append(store, job_id, Succeeded())

    item = (await _list(client, owner_key))["jobs"][0]

    assert item["status"] == "SUCCESS"
    assert item["finished_at"] == item["updated_at"] is not None


async def test_status_and_label_filters_alone_and_combined(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    a = await _create(client, owner_key, job_id="a", labels={"achievement": "42", "kind": "csv"})
    b = await _create(client, owner_key, job_id="b", labels={"achievement": "42"})
    c = await _create(client, owner_key, job_id="c", labels={"achievement": "7", "kind": "csv"})
    d = await _create(client, owner_key, job_id="d")
    await _append(store, a, Succeeded())
    await _append(store, c, Started())

    assert await _ids(client, owner_key, "?status=SUCCESS") == [a]
    assert await _ids(client, owner_key, "?status=PENDING&status=STARTED") == [d, c, b]
    assert await _ids(client, owner_key, "?label=achievement:42") == [b, a]
    assert await _ids(client, owner_key, "?label=kind:csv&label=achievement:42") == [a]
    assert await _ids(client, owner_key, "?label=kind:csv&status=STARTED") == [c]
    assert await _ids(client, owner_key, "?label=achievement:42&status=STARTED") == []
    assert await _ids(client, owner_key, "?label=achievement:4") == []


async def test_created_after_and_before_bound_the_listing(
    client: TestClient, owner_key: IssuedKey
) -> None:
    early = await _create(client, owner_key, job_id="early")
    await asyncio.sleep(0.01)
    middle = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.01)
    late = await _create(client, owner_key, job_id="late")
    moment = middle.isoformat().replace("+00:00", "Z")

    assert await _ids(client, owner_key, f"?created_after={moment}") == [late]
    assert await _ids(client, owner_key, f"?created_before={moment}") == [early]
    offset = middle.astimezone(dt.timezone(dt.timedelta(hours=-3))).isoformat()
    assert await _ids(client, owner_key, "?" + _q("created_before", offset)) == [early]


def _q(name: str, value: str) -> str:
    from urllib.parse import urlencode

    return urlencode({name: value})


async def test_paging_with_concurrent_creations_shows_each_existing_job_exactly_once(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    owner = owner_key.record.key_id
    existing = [f"job-{n:04d}" for n in range(1050)]
    for job_id in existing:
        await store.create_job(job_id, Created(owner=owner))
    seen: list[str] = []
    token = None
    newcomers = 0
    while True:
        query = "?limit=200" + (f"&page_token={token}" if token else "")
        page = await _list(client, owner_key, query)
        seen += [item["job_id"] for item in page["jobs"]]
        for _ in range(30):  # jobs created while paging
            await store.create_job(f"new-{newcomers}", Created(owner=owner))
            newcomers += 1
        token = page["next_page_token"]
        if token is None:
            break

    assert sorted(seen) == existing
    assert len(seen) == len(set(seen))


async def test_page_tokens_only_work_for_their_key_and_query(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    for n in range(3):
        await _create(client, owner_key, job_id=f"mine-{n}", labels={"batch": "x"})
    token = (await _list(client, owner_key, "?limit=1&label=batch:x"))["next_page_token"]
    assert token

    assert len(await _ids(client, owner_key, f"?limit=1&label=batch:x&page_token={token}")) == 1
    for key, query in (
        (other_key, f"?limit=1&label=batch:x&page_token={token}"),  # another key
        (owner_key, f"?limit=1&page_token={token}"),  # another query
        (owner_key, f"?limit=1&label=batch:x&page_token={token[:-2]}AA"),  # edited
        (owner_key, "?page_token=not-a-token"),  # forged
    ):
        response = await client.get(f"/api/v1/jobs{query}", headers=_auth(key))
        assert response.status == 400
        assert (await response.json())["detail"].startswith("page_token:")


@pytest.mark.parametrize(
    ("query", "parameter", "status"),
    [
        ("?status=DONE", "status", 422),
        ("?status=success", "status", 422),
        ("?label=achievement", "label", 422),
        ("?label=Bad Key:1", "label", 422),
        ("?label=a:", "label", 422),
        ("?created_after=yesterday", "created_after", 422),
        ("?created_before=2026-12-04T10:00:00", "created_before", 422),
        ("?limit=0", "limit", 422),
        ("?limit=201", "limit", 422),
        ("?limit=ten", "limit", 422),
        ("?limit=5&limit=6", "limit", 422),
        ("?sort=newest", "sort", 422),
    ],
)
async def test_bad_listing_queries_are_refused_naming_the_parameter(
    client: TestClient, owner_key: IssuedKey, query: str, parameter: str, status: int
) -> None:
    response = await client.get(f"/api/v1/jobs{query}", headers=_auth(owner_key))
    assert response.status == status
    assert (await response.json())["detail"].startswith(f"{parameter}:")


async def test_limit_bounds_a_page_and_200_is_allowed(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    for n in range(3):
        await store.create_job(f"j{n}", Created(owner=owner_key.record.key_id))
    assert len(await _ids(client, owner_key, "?limit=2")) == 2
    assert len(await _ids(client, owner_key, "?limit=200")) == 3


async def test_listing_needs_a_key(client: TestClient) -> None:
    response = await client.get("/api/v1/jobs")
    assert response.status == 401


async def test_a_worker_key_lists_no_jobs_of_the_owners_it_reports_for(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    await _create(client, owner_key)
    worker = await issue_key(store, "worker", "worker", all_owners=True)
    assert await _ids(client, worker) == []


@pytest.mark.parametrize(
    "labels",
    [
        {f"k{n}": "v" for n in range(17)},
        {"Upper": "v"},
        {"k" * 64: "v"},
        {"key": ""},
        {"key": "v" * 257},
        {"key": "nul\x00"},
        {"key": 5},
        ["key", "v"],
    ],
    ids=["17-labels", "upper-key", "long-key", "empty-value", "long-value", "nul", "number",
         "list"],
)
async def test_labels_over_the_limits_are_refused_and_nothing_is_created(
    client: TestClient, owner_key: IssuedKey, labels: Any
) -> None:
    response = await client.post(
        "/api/v1/jobs", json={"job_id": "labelled", "labels": labels}, headers=_auth(owner_key)
    )
    assert response.status == 422
    assert (await response.json())["detail"].startswith("labels")
    assert (await client.get("/api/v1/jobs/labelled", headers=_auth(owner_key))).status == 404
    assert await _ids(client, owner_key) == []


async def test_sixteen_labels_of_full_size_are_kept(
    client: TestClient, owner_key: IssuedKey
) -> None:
    labels = {f"k{n:02d}." + "x" * 58: "v" * 256 for n in range(16)}
    await _create(client, owner_key, labels=labels)
    assert (await _list(client, owner_key))["jobs"][0]["labels"] == labels


async def _finished_job(
    client: TestClient, store: Store, key: IssuedKey, job_id: str
) -> None:
    await _create(client, key, job_id=job_id, labels={"keep": "no"})
    await _append(store, job_id, Started(), RowFailed(row=0, email="a@x", error="bad"),
                  Succeeded())


@pytest.fixture
async def quick_client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> TestClient:
    """A client whose server looks for pruned jobs every 20 ms."""
    await store.close()
    return await aiohttp_client(create_app(Settings(tombstone_interval=0.02), store=store))


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(5):
        while not await check():  # noqa: ASYNC110 - the server's state, not an event of ours
            await asyncio.sleep(0.01)


async def test_a_pruned_job_is_gone_for_its_owner_and_still_forbidden_to_others(
    quick_client: TestClient, store: Store
) -> None:
    client = quick_client
    owner, stranger = await issue_key(store, "owner"), await issue_key(store, "stranger")
    worker = await issue_key(store, "w", "worker", owners=[owner.record.key_id])
    await _finished_job(client, store, owner, "old")
    assert (await client.get("/api/v1/jobs/old", headers=_auth(owner))).status == 200  # cached

    done = await store.prune(utc_now(), 100)
    assert (done.jobs, done.events) == (1, 4)

    async def expired() -> bool:
        return (await client.get("/api/v1/jobs/old", headers=_auth(owner))).status == 410

    await _eventually(expired)
    for method, path in (
        ("GET", "/api/v1/jobs/old"),
        ("GET", "/api/v1/jobs/old/events"),
        ("GET", "/api/v1/jobs/old/errors"),
        ("GET", "/api/v1/jobs/old/stream"),
        ("POST", "/api/v1/jobs/old/cancel"),
    ):
        response = await client.request(method, path, headers=_auth(owner))
        assert response.status == 410, path
        assert await response.json() == {"detail": "Job expired"}
        response = await client.request(method, path, headers=_auth(stranger))
        assert (response.status, await response.json()) == (
            403, {"detail": "Access denied to this job"}), path
    events = [{"type": "started"}]
    response = await client.post("/api/v1/jobs/old/events", json=events, headers=_auth(worker))
    assert response.status == 410
    assert await _ids(client, owner) == []


async def test_a_pruned_jobs_id_is_never_created_again(
    client: TestClient, store: Store, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    await _finished_job(client, store, owner_key, "once")
    await store.prune(utc_now(), 100)

    for key in (owner_key, other_key):
        response = await client.post("/api/v1/jobs", json={"job_id": "once"}, headers=_auth(key))
        assert response.status == 409
        assert "expired" in (await response.json())["detail"]


async def test_prune_takes_only_jobs_finished_before_the_cutoff(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    await _finished_job(client, store, owner_key, "finished-early")
    cutoff = utc_now()
    await _finished_job(client, store, owner_key, "finished-late")
    await _create(client, owner_key, job_id="running")
    await _append(store, "running", Started())

    counted = await store.prune(cutoff, 100, dry_run=True)
    assert (counted.jobs, counted.events) == (1, 4)
    assert await _ids(client, owner_key) == ["running", "finished-late", "finished-early"]
    assert (await store.prune(cutoff, 100)).jobs == 1
    assert (await store.prune(utc_now(), 100)).jobs == 1  # finished-late; never running
    assert await _ids(client, owner_key) == ["running"]
    assert await store.find_tombstone("running") is None


async def test_replay_and_verify_are_clean_after_a_prune(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    assert isinstance(store, Rebuildable)
    for n in range(5):
        await _finished_job(client, store, owner_key, f"gone-{n}")
    await _create(client, owner_key, job_id="kept", total=3, labels={"keep": "yes"})
    await _append(store, "kept", Started(), RowSucceeded(row=0, email="a@x", internal=False))
    while (await store.prune(utc_now(), 2)).jobs:
        pass
    before = await client.get("/api/v1/jobs/kept", headers=_auth(owner_key))

    verified = await replay.verify(store)
    assert verified.comparison is not None
    assert verified.comparison.differing == 0
    await replay.rebuild(store)
    after = await replay.verify(store)

    assert after.comparison is not None
    assert after.comparison.differing == 0
    again = await client.get("/api/v1/jobs/kept", headers=_auth(owner_key))
    assert await again.json() == await before.json()
    assert await _ids(client, owner_key, "?label=keep:yes") == ["kept"]


async def test_a_prune_while_workers_append_loses_nothing(
    client: TestClient, store: Store, owner_key: IssuedKey
) -> None:
    for n in range(40):
        await _finished_job(client, store, owner_key, f"old-{n}")
    cutoff = utc_now()
    live = [await _create(client, owner_key, job_id=f"live-{n}") for n in range(4)]

    async def worker(job_id: str) -> int:
        acknowledged = 0
        for row in range(60):
            await _append(store, job_id, RowSucceeded(row=row, email="a@x", internal=True))
            acknowledged += 1
        return acknowledged

    async def pruner() -> int:
        removed = 0
        while (done := await store.prune(cutoff, 3)).jobs:
            removed += done.jobs
            await asyncio.sleep(0)
        return removed

    *acknowledged, removed = await asyncio.gather(*(worker(j) for j in live), pruner())

    assert removed == 40
    for job_id, count in zip(live, acknowledged, strict=True):
        body = await (await client.get(f"/api/v1/jobs/{job_id}", headers=_auth(owner_key))).json()
        assert body["progress"]["current"] == count == 60
        assert len(await store.read_job_events(job_id, 0, 1000)) == 61
    assert sorted(await _ids(client, owner_key, "?limit=200")) == sorted(live)


async def test_a_server_with_retention_prunes_in_the_background(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> None:
    key = await issue_key(store, "owner")
    await store.create_job("ancient", Created(owner=key.record.key_id))
    await _append(store, "ancient", Succeeded())
    await store.create_job("running", Created(owner=key.record.key_id))
    await store.close()
    # Retention of one second: "ancient" is due a second after it finished.
    await asyncio.sleep(1.05)
    client = await aiohttp_client(
        create_app(Settings(retention=1, tombstone_interval=0.02), store=store)
    )

    async def pruned() -> bool:
        return (await client.get("/api/v1/jobs/ancient", headers=_auth(key))).status == 410

    await _eventually(pruned)
    assert await _ids(client, key) == ["running"]


def test_log_times_sort_like_the_moments_they_name() -> None:
    moments = [dt.datetime(2026, 12, 4, 10, 0, 0, n, tzinfo=dt.UTC) for n in (0, 5, 120000)]
    assert sorted(log_time(m) for m in reversed(moments)) == [log_time(m) for m in moments]


async def test_a_prune_that_lands_during_a_replay_stays_pruned(
    client: TestClient, store: Store, owner_key: IssuedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(store, Rebuildable)
    for n in range(3):
        await _finished_job(client, store, owner_key, f"late-{n}")
    await _create(client, owner_key, job_id="kept")
    cutoff = utc_now()
    for method in ("swap_in", "compare_area"):
        original = getattr(store, method)

        async def prune_first(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            await store.prune(cutoff, 100)  # after the area read the log, before it goes live
            return await _original(*args, **kwargs)

        monkeypatch.setattr(store, method, prune_first)

    await replay.rebuild(store)
    monkeypatch.undo()
    for n in range(3):
        await _finished_job(client, store, owner_key, f"later-{n}")
    verified = await replay.verify(store)

    assert verified.comparison is not None
    assert verified.comparison.differing == 0
    assert await store.get_job("late-0", 10) is None
    assert await _ids(client, owner_key) == ["later-2", "later-1", "later-0", "kept"]
