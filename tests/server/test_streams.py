"""Many event streams on one server: each change read once and sent to every stream of the job."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import ProgressReported, Succeeded
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.base import JobView
from jobtracker.store.keys import IssuedKey, issue_key
from jobtracker.store.memory import MemoryStore
from tests.conditions import until_async
from tests.server.test_waiting import append, headers, new_job, read_events

STREAMS = 40


async def open_streams(client: TestClient, key: IssuedKey, job_id: str,
                       count: int) -> list[ClientResponse]:
    """`count` streams of the job, each past its first event."""
    streams = [await client.get(f"/api/v1/jobs/{job_id}/stream", headers=headers(key))
               for _ in range(count)]
    for response in streams:
        await read_events(response, 1)
    return streams


async def next_event_bytes(response: ClientResponse) -> bytes:
    """The next event exactly as sent, from its `id:` line to the blank line ending it."""
    lines = []
    while not lines or lines[-1] != b"\n":
        line = await asyncio.wait_for(response.content.readline(), 10)
        if lines or line.startswith(b"id: "):
            lines.append(line)
    return b"".join(lines)


async def open_stream_count(client: TestClient) -> float:
    """`jobtracker_waiters{kind="stream"}` from a scrape of this server."""
    text = await (await client.get("/metrics")).text()
    found = re.search(r'^jobtracker_waiters\{kind="stream"\} (\S+)$', text, re.MULTILINE)
    assert found is not None, text
    return float(found.group(1))


async def test_every_stream_of_a_job_gets_the_same_event(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """One append to a job watched by many streams reaches every one of them, byte for byte
    the same event, and the job's end closes them all."""
    job_id = await new_job(store, owner_key)
    streams = await open_streams(client, owner_key, job_id, STREAMS)
    await append(store, job_id, ProgressReported(3, 10))
    events = {await next_event_bytes(response) for response in streams}
    assert len(events) == 1
    [event] = events
    assert event.startswith(b"id: 2\ndata: ")
    assert b'"current":3' in event
    await append(store, job_id, Succeeded())
    ends = [await asyncio.wait_for(response.content.read(), 10) for response in streams]
    assert all(b'"status":"SUCCESS"' in end for end in ends)


async def test_a_stream_that_starts_later_gets_the_current_body_and_then_the_same_events(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A stream joining a job others already watch starts from the job's current body."""
    job_id = await new_job(store, owner_key)
    [early] = await open_streams(client, owner_key, job_id, 1)
    await append(store, job_id, ProgressReported(1, 10))
    await next_event_bytes(early)
    late = await client.get(f"/api/v1/jobs/{job_id}/stream", headers=headers(owner_key))
    [(version, body)] = await read_events(late, 1)
    assert (version, body["progress"]["current"]) == (2, 1)
    await append(store, job_id, ProgressReported(2, 10))
    assert await next_event_bytes(early) == await next_event_bytes(late)


async def test_streams_count_in_the_waiters_gauge_until_their_clients_leave(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """Open streams show in `jobtracker_waiters{kind="stream"}` and leave it when the client
    hangs up, without waiting for the job to change."""
    job_id = await new_job(store, owner_key)
    before = await open_stream_count(client)
    streams = await open_streams(client, owner_key, job_id, 5)
    assert await open_stream_count(client) == before + 5
    for response in streams:
        response.close()

    async def all_gone() -> bool:
        return await open_stream_count(client) == before

    await until_async(all_gone, "the streams whose clients left to leave the gauge")


async def test_a_last_event_id_ahead_of_the_job_gets_the_current_body(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A client resuming with an id this job never reached (another deployment's, say) is sent
    the job as it is rather than nothing."""
    job_id = await new_job(store, owner_key)
    response = await client.get(f"/api/v1/jobs/{job_id}/stream",
                                headers=headers(owner_key, **{"Last-Event-ID": "99"}))
    [(version, body)] = await read_events(response, 1)
    assert (version, body["status"]) == (1, "PENDING")


async def test_an_http_1_0_client_gets_a_stream_that_ends_by_closing(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """Without chunked encoding (HTTP/1.0) the events come as they are and the connection
    closes after the terminal one."""
    job_id = await new_job(store, owner_key)
    assert client.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(f"GET /api/v1/jobs/{job_id}/stream HTTP/1.0\r\n"
                 f"X-API-Key: {owner_key.secret}\r\n\r\n".encode())
    await asyncio.wait_for(reader.readuntil(b"retry: 2000\n\n"), 10)
    await asyncio.wait_for(reader.readuntil(b"\n\n"), 10)  # the first body
    await append(store, job_id, Succeeded())
    rest = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert rest.startswith(b"id: 2\ndata: ")
    assert rest.endswith(b"\n\n")
    assert b"\r\n" not in rest


async def test_shutdown_ends_every_stream_with_the_reconnect_comment(
    client: TestClient, owner_key: IssuedKey, store: Store
) -> None:
    """A stopping server tells every open stream to reconnect, whatever job it watches."""
    jobs = [await new_job(store, owner_key, f"job-{n}") for n in range(3)]
    streams = [response for job_id in jobs
               for response in await open_streams(client, owner_key, job_id, 3)]
    await client.server.close()
    for response in streams:
        rest = await asyncio.wait_for(response.content.read(), 10)
        assert rest.endswith(b": server shutting down, reconnect\n\n")


class _BrokenForOneJob(MemoryStore):
    """A store whose reads of one job fail with a bug (not a store error) once `breaking`."""

    def __init__(self, broken: str) -> None:
        super().__init__()
        self.broken = broken
        self.breaking = False

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        if self.breaking and job_id == self.broken:
            raise RuntimeError("a bug reading this job")
        return await super().get_job(job_id, errors_limit)


async def test_a_job_whose_update_fails_ends_its_streams_and_the_others_go_on(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    """An unexpected failure updating one job's streams closes those streams; a stream of
    another job still gets its next event (the server's streams do not all go quiet)."""
    store = _BrokenForOneJob("job-bad")
    key = await issue_key(store, "owner")
    client = await aiohttp_client(create_app(Settings(), store=store))
    bad = await new_job(store, key, "job-bad")
    good = await new_job(store, key, "job-good")
    [bad_stream] = await open_streams(client, key, bad, 1)
    [good_stream] = await open_streams(client, key, good, 1)
    store.breaking = True

    await append(store, bad, ProgressReported(1, 10))
    assert await asyncio.wait_for(bad_stream.content.read(), 10) == b""
    await append(store, good, ProgressReported(2, 10))

    assert b'"current":2' in await next_event_bytes(good_stream)
