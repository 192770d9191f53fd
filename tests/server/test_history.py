"""History and row errors over HTTP: paged, owner only, and a capped result that says so."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.server.app import STORE, create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.keys import IssuedKey, issue_key
from tests.conftest import make_test_store

Headers = dict[str, str]


def headers(key: IssuedKey) -> Headers:
    return {"X-API-Key": key.secret}


async def make_job(client: TestClient, key: IssuedKey, rows: int, job_id: str = "big") -> None:
    """A finished job whose every third row failed."""
    created = await client.post("/api/v1/jobs", json={"job_id": job_id}, headers=headers(key))
    assert created.status == 201
    events: list[dict[str, Any]] = [{"type": "started", "event_id": "s"}]
    for row in range(rows):
        if row % 3 == 0:
            events.append({"type": "row_failed", "row": row, "email": f"r{row}@uni.edu",
                           "error": f"bad {row}"})
        else:
            events.append({"type": "row_succeeded", "row": row, "email": f"r{row}@uni.edu",
                           "internal": True})
    events.append({"type": "succeeded"})
    appended = await client.post(f"/api/v1/jobs/{job_id}/events", json=events,
                                 headers=headers(key))
    assert appended.status == 200


async def pages(client: TestClient, key: IssuedKey, path: str, cursor: str, limit: int) -> list[
    dict[str, Any]
]:
    """Follow `next_…` from the first page to the last."""
    found: list[dict[str, Any]] = []
    query = f"?limit={limit}"
    while True:
        response = await client.get(path + query, headers=headers(key))
        assert response.status == 200
        body = await response.json()
        found.append(body)
        if body[f"next_{cursor}"] is None:
            return found
        query = f"?limit={limit}&{cursor}={body[f'next_{cursor}']}"


async def test_history_pages_oldest_first_with_positions(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """/events lists every event once, in version order, with its place in the log and fields."""
    await make_job(client, owner_key, rows=7)
    seen = await pages(client, owner_key, "/api/v1/jobs/big/events", "after_version", 4)
    events = [e for page in seen for e in page["events"]]
    assert [e["version"] for e in events] == list(range(1, 11))
    assert [len(page["events"]) for page in seen] == [4, 4, 2]
    positions = [e["position"] for e in events]
    assert positions == sorted(set(positions))
    assert events[0]["type"] == "created"
    assert events[1] == {
        "version": 2, "position": positions[1], "type": "started", "event_id": "s",
        "recorded_at": events[1]["recorded_at"],
    }
    assert events[2] | {"recorded_at": "", "event_id": "", "position": 0} == {
        "version": 3, "position": 0, "type": "row_failed", "event_id": "", "recorded_at": "",
        "row": 0, "email": "r0@uni.edu", "error": "bad 0",
    }


async def test_errors_page_in_row_order_to_the_last(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """/errors lists every row error in row order, page after page."""
    await make_job(client, owner_key, rows=20)
    seen = await pages(client, owner_key, "/api/v1/jobs/big/errors", "after_row", 3)
    rows = [e["row"] for page in seen for e in page["errors"]]
    assert rows == list(range(0, 20, 3))
    assert {page["errors_total"] for page in seen} == {7}


@pytest.mark.parametrize(
    ("query", "named"),
    [("?limit=0", "limit"), ("?limit=x", "limit"), ("?after_version=-1", "after_version"),
     ("?after_version=1.5", "after_version")],
)
async def test_bad_history_parameters_are_refused_by_name(
    client: TestClient, owner_key: IssuedKey, query: str, named: str
) -> None:
    """A malformed page parameter is a 422 whose detail names it."""
    await make_job(client, owner_key, rows=1)
    response = await client.get(f"/api/v1/jobs/big/events{query}", headers=headers(owner_key))
    assert response.status == 422
    assert (await response.json())["detail"].startswith(f"{named}:")


async def test_limit_is_capped_at_a_thousand(client: TestClient, owner_key: IssuedKey) -> None:
    """Asking for more than 1000 items gets a full page of 1000, and a way to the next."""
    await make_job(client, owner_key, rows=3001)
    response = await client.get("/api/v1/jobs/big/errors?limit=5000", headers=headers(owner_key))
    body = await response.json()
    assert (len(body["errors"]), body["next_after_row"]) == (1000, 2997)


@pytest.mark.parametrize("path", ["events", "errors"])
async def test_history_is_for_the_owner_only(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey, path: str
) -> None:
    """Someone else's key is 403, an unknown or malformed job 404, no key 401."""
    await make_job(client, owner_key, rows=2)
    other = await client.get(f"/api/v1/jobs/big/{path}", headers=headers(other_key))
    assert (other.status, await other.json()) == (403, {"detail": "Access denied to this job"})
    for job_id in ("nobody", "bad%20id"):
        missing = await client.get(f"/api/v1/jobs/{job_id}/{path}", headers=headers(owner_key))
        assert (missing.status, await missing.json()) == (404, {"detail": "Job not found"})
    anonymous = await client.get(f"/api/v1/jobs/big/{path}")
    assert anonymous.status == 401


async def test_worker_key_cannot_read_history(client: TestClient, owner_key: IssuedKey,
                                              store: Store) -> None:
    """A worker key may append to a job but not read its history."""
    await make_job(client, owner_key, rows=1)
    worker = await issue_key(
        client.app[STORE], "worker", "worker", owners=[owner_key.record.key_id]
    )
    response = await client.get("/api/v1/jobs/big/events", headers=headers(worker))
    assert response.status == 403


@pytest.fixture
async def capped(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store_kind: str, tmp_path: Path
) -> TestClient:
    """A client on an app that lists at most 3 row errors in a GET body."""
    store = make_test_store(store_kind, tmp_path / "capped")
    return await aiohttp_client(create_app(Settings(errors_cap=3), store=store))


async def test_capped_result_points_to_the_full_list(capped: TestClient) -> None:
    """Past the cap, GET lists the first errors in row order and says how many there are."""
    key = await issue_key(capped.app[STORE], "owner")
    await make_job(capped, key, rows=30)
    body = await (await capped.get("/api/v1/jobs/big", headers=headers(key))).json()
    result = body["result"]
    assert [e["row"] for e in result["errors"]] == [0, 3, 6]
    assert (result["errors_total"], result["errors_truncated"], result["failed"]) == (10, True, 10)
    full = await (await capped.get("/api/v1/jobs/big/errors", headers=headers(key))).json()
    assert len(full["errors"]) == 10
    assert full["next_after_row"] is None


async def test_result_under_the_cap_has_no_truncation_fields(capped: TestClient) -> None:
    """At or under the cap, the body is exactly the seed's: no errors_total, no flag."""
    key = await issue_key(capped.app[STORE], "owner")
    await make_job(capped, key, rows=9)
    body = await (await capped.get("/api/v1/jobs/big", headers=headers(key))).json()
    assert len(body["result"]["errors"]) == 3
    assert "errors_total" not in body["result"]
    assert "errors_truncated" not in body["result"]
