"""A catalogue of bad input: each gets the right 4xx with a `detail`, and the log does not move."""

from __future__ import annotations

import io
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from jobtracker.store import Store
from jobtracker.store.keys import IssuedKey

ROW = {"type": "row_succeeded", "row": 1, "email": "a@uni.edu", "internal": True}

EVENT_BODIES: list[tuple[str, bytes, int, str]] = [
    ("truncated JSON", b'[{"type": "started"', 400, "not valid JSON"),
    ("not JSON at all", b"row=1&email=x", 400, "not valid JSON"),
    ("invalid UTF-8", b'[{"type": "\xff\xfe"}]', 400, "not valid JSON"),
    ("lone surrogate", b'[{"type": "row_failed", "row": 1, "email": "\\ud800", "error": "x"}]',
     400, "not valid JSON"),
    ("an object, not an array", orjson.dumps({"type": "started"}), 400, "JSON array"),
    ("a bare string", b'"started"', 400, "JSON array"),
    ("an empty batch", b"[]", 422, "empty"),
    ("an event that is a string", b'["started"]', 422, "events[0]"),
    ("unknown type", orjson.dumps([{"type": "deleted"}]), 422, "events[0].type"),
    ("created from a worker", orjson.dumps([{"type": "created", "owner": "me"}]), 422,
     "events[0].type"),
    ("row as a string", orjson.dumps([{**ROW, "row": "1"}]), 422, "events[0].row"),
    ("row as a float", orjson.dumps([{**ROW, "row": 1.5}]), 422, "events[0].row"),
    ("internal as 1", orjson.dumps([{**ROW, "internal": 1}]), 422, "events[0].internal"),
    ("negative row", orjson.dumps([{**ROW, "row": -1}]), 422, "events[0].row"),
    ("row past 2**53", orjson.dumps([{**ROW, "row": 2**60}]), 422, "events[0].row"),
    ("current > total", orjson.dumps([{"type": "progress", "current": 9, "total": 3}]), 422,
     "events[0].current"),
    ("missing field", orjson.dumps([{"type": "row_failed", "row": 1, "email": "x"}]), 422,
     "events[0].error"),
    ("extra field", orjson.dumps([{**ROW, "rowz": 2}]), 422, "events[0].rowz"),
    ("NUL in e-mail", orjson.dumps([{**ROW, "email": "a\x00b"}]), 422, "events[0].email"),
    ("huge e-mail", orjson.dumps([{**ROW, "email": "a" * 10_000}]), 422, "events[0].email"),
    ("huge error text", orjson.dumps([{"type": "failed", "error": "x" * 100_000}]), 422,
     "events[0].error"),
    ("event_id of 10 kB", orjson.dumps([{**ROW, "event_id": "e" * 10_000}]), 422,
     "events[0].event_id"),
    ("event_id as a number", orjson.dumps([{**ROW, "event_id": 7}]), 422, "events[0].event_id"),
    ("second bad among good", orjson.dumps([ROW, {**ROW, "row": 2, "email": ""}]), 422,
     "events[1].email"),
    ("10,001 events", orjson.dumps([{"type": "started"}] * 10_001), 413, "10000"),
    ("a body over 1 MiB", orjson.dumps([{"type": "failed", "error": "x" * 2_000_000}]), 413,
     "larger than"),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
]


async def log_snapshot(store: Store) -> list[Any]:
    return await store.read_log(0, 100_000)


@pytest.mark.parametrize(("case", "body", "status", "detail"), EVENT_BODIES,
                         ids=[c[0] for c in EVENT_BODIES])
async def test_bad_event_batches_are_refused_and_write_nothing(
    client: TestClient, owner_key: IssuedKey, store: Store,
    case: str, body: bytes, status: int, detail: str,
) -> None:
    """Every hostile batch gets its 4xx and a detail naming the problem; the log is unchanged."""
    headers = {"X-API-Key": owner_key.secret}
    created = await client.post("/api/v1/jobs", json={"job_id": "target"}, headers=headers)
    assert created.status == 201
    before = await log_snapshot(store)
    response = await client.post(
        "/api/v1/jobs/target/events", data=io.BytesIO(body), headers=headers
    )
    assert response.status == status, await response.text()
    assert detail in (await response.json())["detail"]
    assert await log_snapshot(store) == before


PATH_IDS = [
    "'; DROP TABLE events;--", "../../etc/passwd", "..%2F..%2Fjobs", "a" * 129, "%00",
    "job%20id", "\u202ejob", "x" * 5000, "null", "🙂",
]


@pytest.mark.parametrize("job_id", PATH_IDS, ids=range(len(PATH_IDS)))
async def test_hostile_job_ids_in_the_path_are_404_and_write_nothing(
    client: TestClient, owner_key: IssuedKey, store: Store, job_id: str
) -> None:
    """SQL, path and Unicode tricks in an id are ids that do not exist, or paths we do not serve."""
    headers = {"X-API-Key": owner_key.secret}
    before = await log_snapshot(store)
    read = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    write = await client.post(f"/api/v1/jobs/{job_id}/events", json=[ROW], headers=headers)
    for response in (read, write):
        assert response.status in (404, 414), await response.text()
        # `../` may be resolved before routing (an unknown route): a 404 with a detail all the same
        assert (await response.json())["detail"] in ("Job not found", "Not Found")
    assert await log_snapshot(store) == before


CREATE_BODIES: list[tuple[str, Any, int, str]] = [
    ("SQL in job_id", {"job_id": "x'; DROP TABLE jobs;--"}, 422, "job_id"),
    ("slash in job_id", {"job_id": "a/b"}, 422, "job_id"),
    ("129-character job_id", {"job_id": "a" * 129}, 422, "job_id"),
    ("negative total", {"total": -1}, 422, "total"),
    ("total as text", {"total": "50"}, 422, "total"),
    ("NUL in label", {"label": "a\x00"}, 422, "label"),
    ("a list", [1, 2], 400, "JSON object"),
]


@pytest.mark.parametrize(("case", "body", "status", "detail"), CREATE_BODIES,
                         ids=[c[0] for c in CREATE_BODIES])
async def test_bad_creation_requests_are_refused_and_write_nothing(
    client: TestClient, owner_key: IssuedKey, store: Store,
    case: str, body: Any, status: int, detail: str,
) -> None:
    """Job creation refuses hostile bodies with a detail naming the field."""
    response = await client.post("/api/v1/jobs", json=body,
                                 headers={"X-API-Key": owner_key.secret})
    assert response.status == status
    assert detail in (await response.json())["detail"]
    assert await log_snapshot(store) == []


async def test_odd_but_valid_unicode_is_kept_exactly(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Emoji, right-to-left marks and combining accents are valid text, kept exactly as sent."""
    headers = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "uni"}, headers=headers)
    email, error = "jos\u0065\u0301@uni.edu", "\u202eoops 🙂 \u05e9\u05dc\u05d5\u05dd"
    await client.post(
        "/api/v1/jobs/uni/events",
        json=[{"type": "row_failed", "row": 1, "email": email, "error": error},
              {"type": "succeeded"}],
        headers=headers,
    )
    body = await (await client.get("/api/v1/jobs/uni", headers=headers)).json()
    assert body["result"]["errors"] == [{"row": 1, "email": email, "error": error}]
