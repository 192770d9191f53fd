"""Waiting without hammering: ETag, 304, Retry-After, long-poll and the event stream."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import (
    Created,
    Failed,
    NewEvent,
    ProgressReported,
    Started,
    Succeeded,
    new_event_id,
)
from jobtracker.server.app import FEED, create_app
from jobtracker.server.settings import Settings
from jobtracker.store import SqliteStore, Store
from jobtracker.store.keys import IssuedKey, issue_key
from tests.conditions import until


async def new_job(store: Store, key: IssuedKey, job_id: str = "job-w") -> str:
    await store.create_job(job_id, Created(owner=key.record.key_id, total=10))
    return job_id


async def append(store: Store, job_id: str, *events: Any) -> None:
    await store.append(job_id, [NewEvent(new_event_id(), e) for e in events])


def headers(key: IssuedKey, **extra: str) -> dict[str, str]:
    return {"X-API-Key": key.secret, **extra}


async def test_body_carries_etag_no_cache_and_retry_after(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A running job tells the client its version and how long to wait before asking again."""
    job_id = await new_job(store, owner_key)
    response = await client.get(f"/api/v1/jobs/{job_id}", headers=headers(owner_key))
    assert response.headers["ETag"] == '"1"'
    assert response.headers["Cache-Control"] == "no-cache"
    assert int(response.headers["Retry-After"]) >= 1


async def test_finished_job_has_no_retry_after(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A terminal body will never change: no hint to come back."""
    job_id = await new_job(store, owner_key)
    await append(store, job_id, Failed("Achievement not found"))
    response = await client.get(f"/api/v1/jobs/{job_id}", headers=headers(owner_key))
    assert response.headers["ETag"] == '"2"'
    assert "Retry-After" not in response.headers


async def test_if_none_match_answers_304_until_the_job_changes(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """An unchanged job costs a 304 with no body; a changed one gets the new body."""
    job_id = await new_job(store, owner_key)
    url = f"/api/v1/jobs/{job_id}"
    same = await client.get(url, headers=headers(owner_key, **{"If-None-Match": '"1"'}))
    assert (same.status, await same.read(), same.headers["ETag"]) == (304, b"", '"1"')
    weak = await client.get(url, headers=headers(owner_key, **{"If-None-Match": 'W/"0", W/"1"'}))
    assert weak.status == 304
    await append(store, job_id, Started())
    changed = await client.get(url, headers=headers(owner_key, **{"If-None-Match": '"1"'}))
    assert changed.status == 200
    assert (await changed.json())["status"] == "STARTED"


@pytest.mark.parametrize("wait", ["61", "-1", "abc", "1.5"])
async def test_bad_wait_is_422_naming_it(
    client: TestClient, owner_key: IssuedKey, store: Store, wait: str
) -> None:
    """`wait` is a whole number of seconds up to 60."""
    job_id = await new_job(store, owner_key)
    response = await client.get(f"/api/v1/jobs/{job_id}?wait={wait}", headers=headers(owner_key))
    assert response.status == 422
    assert (await response.json())["detail"].startswith("wait:")


async def test_long_poll_returns_as_soon_as_the_job_changes(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A held request answers with the new body right after an append, long before `wait`."""
    job_id = await new_job(store, owner_key)
    url = f"/api/v1/jobs/{job_id}?wait=20"
    held = asyncio.ensure_future(
        client.get(url, headers=headers(owner_key, **{"If-None-Match": '"1"'}))
    )
    await until(lambda: client.app[FEED].waiting == 1, "the GET was never held")
    assert not held.done()
    started = time.monotonic()
    await client.post(
        f"/api/v1/jobs/{job_id}/events",
        json=[{"type": "progress", "current": 3, "total": 10}],
        headers=headers(owner_key),
    )
    response = await asyncio.wait_for(held, 5)
    assert time.monotonic() - started < 1
    assert response.status == 200
    assert (await response.json())["progress"]["current"] == 3


async def test_long_poll_answers_304_when_nothing_changes(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """After `wait` seconds without a change the answer is 304, not an error."""
    job_id = await new_job(store, owner_key)
    started = time.monotonic()
    response = await client.get(
        f"/api/v1/jobs/{job_id}?wait=1", headers=headers(owner_key, **{"If-None-Match": '"1"'})
    )
    assert response.status == 304
    assert 0.9 < time.monotonic() - started < 3


async def test_long_poll_on_a_finished_job_answers_at_once(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """Nothing will ever change a terminal job, so nobody is kept waiting for it."""
    job_id = await new_job(store, owner_key)
    await append(store, job_id, Succeeded())
    started = time.monotonic()
    response = await client.get(
        f"/api/v1/jobs/{job_id}?wait=30", headers=headers(owner_key, **{"If-None-Match": '"2"'})
    )
    assert response.status == 304
    assert time.monotonic() - started < 1


async def read_events(response: ClientResponse, count: int) -> list[tuple[int, Any]]:
    """The next `count` SSE events of a stream, as (id, body)."""
    events: list[tuple[int, Any]] = []
    event_id, data = None, None
    while len(events) < count:
        line = (await asyncio.wait_for(response.content.readline(), 10)).decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data = orjson.loads(line[6:])
        elif line == "" and data is not None and event_id is not None:
            events.append((event_id, data))
            event_id, data = None, None
    return events


async def subscribed(response: ClientResponse) -> None:
    """Read up to the stream's `retry:` line, which it sends once it is subscribed to changes."""
    while not (await asyncio.wait_for(response.content.readline(), 10)).startswith(b"retry: "):
        pass


async def test_stream_sends_each_change_and_ends_after_the_terminal_body(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """The event stream delivers the body on every change and closes once the job is done."""
    job_id = await new_job(store, owner_key)
    response = await client.get(f"/api/v1/jobs/{job_id}/stream", headers=headers(owner_key))
    assert response.content_type == "text/event-stream"
    [(first_id, first)] = await read_events(response, 1)
    assert (first_id, first["status"]) == (1, "PENDING")
    await append(store, job_id, ProgressReported(5, 10))
    [(_, progress)] = await read_events(response, 1)
    assert progress["progress"]["current"] == 5
    await append(store, job_id, Succeeded())
    [(last_id, last)] = await read_events(response, 1)
    assert (last_id, last["status"]) == (3, "SUCCESS")
    assert await asyncio.wait_for(response.content.read(), 5) == b""


async def test_stream_resumes_after_last_event_id(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A reconnecting client that saw version 2 is not sent version 2 again."""
    job_id = await new_job(store, owner_key)
    await append(store, job_id, Started())
    response = await client.get(
        f"/api/v1/jobs/{job_id}/stream", headers=headers(owner_key, **{"Last-Event-ID": "2"})
    )
    await subscribed(response)
    await append(store, job_id, Failed("boom"))
    [(event_id, body)] = await read_events(response, 1)  # version 2 first, if it were re-sent
    assert (event_id, body["status"]) == (3, "FAILURE")


async def test_idle_stream_sends_heartbeats_and_a_busy_one_does_not(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """A quiet stream gets a heartbeat comment about once per period (so proxies keep it open);
    a stream sending bodies needs none while it never goes a whole period without one."""
    period = 0.8  # a loaded CI machine once stalled the busy stream past 0.4 s
    store = SqliteStore(str(tmp_path / "beats.db"))
    client = await aiohttp_client(create_app(Settings(heartbeat=period), store=store))
    key = await issue_key(store, "owner")
    quiet, busy = await new_job(store, key, "quiet"), await new_job(store, key, "busy")
    streams = {
        job_id: await client.get(f"/api/v1/jobs/{job_id}/stream", headers=headers(key))
        for job_id in (quiet, busy)
    }
    for response in streams.values():
        [(first, _)] = await read_events(response, 1)
        assert first == 1
    began = time.monotonic()
    enough = asyncio.Event()
    busy_beats = 0

    async def keep_busy_stream_busy() -> int:
        """Append as soon as the busy stream has sent the last change: a body after a body."""
        nonlocal busy_beats
        sent = 0
        while not enough.is_set():
            sent += 1
            await append(store, busy, ProgressReported(sent, 1_000_000))
            while not (line := await asyncio.wait_for(streams[busy].content.readline(), 10)
                       ).startswith(b"id: "):
                busy_beats += line == b": heartbeat\n"
            assert line == b"id: %d\n" % (sent + 1), "the busy stream sent another body"
        return sent

    busy_task = asyncio.create_task(keep_busy_stream_busy())
    beats = 0
    while beats < 3:  # the quiet stream's first three heartbeats, however long they take
        line = await asyncio.wait_for(streams[quiet].content.readline(), 10 * period)
        beats += line == b": heartbeat\n"
    quiet_for = time.monotonic() - began
    enough.set()
    assert await asyncio.wait_for(busy_task, 10) > 3  # many bodies, none a period apart
    await append(store, quiet, Succeeded())
    await append(store, busy, Succeeded())
    rest = {job_id: await asyncio.wait_for(r.content.read(), 5) for job_id, r in streams.items()}
    assert 3 * period - 0.2 <= quiet_for <= 4 * period + 1.0, f"3 heartbeats in {quiet_for:.2f} s"
    assert busy_beats + rest[busy].count(b": heartbeat\n") == 0
    assert b'"status":"SUCCESS"' in rest[quiet]


async def test_stream_misses_no_change_that_lands_while_it_is_writing(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """Changes arriving back to back, faster than the stream sends, all reach the client:
    its last body is always the job's newest state."""
    job_id = await new_job(store, owner_key)
    response = await client.get(f"/api/v1/jobs/{job_id}/stream", headers=headers(owner_key))
    await read_events(response, 1)
    for n in range(1, 40):
        await append(store, job_id, ProgressReported(n, 40))
    await append(store, job_id, Succeeded())
    events = await read_events(response, 1)
    while events[-1][1]["status"] != "SUCCESS":
        events += await read_events(response, 1)
    assert events[-1][0] == 41
    assert [event_id for event_id, _ in events] == sorted({event_id for event_id, _ in events})


async def test_stream_needs_the_owner_key(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey, store: Store
) -> None:
    """Streams are as private as GET: the seed's 403 for another key, 404 for no job."""
    job_id = await new_job(store, owner_key)
    denied = await client.get(f"/api/v1/jobs/{job_id}/stream", headers=headers(other_key))
    missing = await client.get("/api/v1/jobs/nope/stream", headers=headers(owner_key))
    assert (denied.status, await denied.json()) == (403, {"detail": "Access denied to this job"})
    assert missing.status == 404


WORKER = """
import sys, time
from jobtracker.domain.events import NewEvent, ProgressReported
from jobtracker.store.sqlite.log import SqliteLog
log = SqliteLog(sys.argv[1])
sys.stdin.readline()  # told to go once the server holds the GET
log.append(sys.argv[2], [NewEvent("from-another-process", ProgressReported(7, 10))])
print(time.time(), flush=True)
"""


async def test_append_from_another_process_wakes_a_long_poll(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    """An SDK writing straight into the SQLite file wakes requests held by the server."""
    db = str(tmp_path / "jobs.db")
    store = SqliteStore(db)
    client = await aiohttp_client(create_app(Settings(), store=store))
    key = await issue_key(store, "owner")
    job_id = await new_job(store, key)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WORKER, db, job_id,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    held = asyncio.ensure_future(client.get(
        f"/api/v1/jobs/{job_id}?wait=20", headers=headers(key, **{"If-None-Match": '"1"'})
    ))
    await until(lambda: client.app[FEED].waiting == 1, "the GET was never held")
    finished = asyncio.ensure_future(worker.communicate(b"go\n"))
    response = await asyncio.wait_for(held, 20)
    seen_at = time.time()
    appended_at = float((await asyncio.wait_for(finished, 10))[0])
    assert response.status == 200
    assert (await response.json())["progress"]["current"] == 7
    assert seen_at - appended_at < 0.5
