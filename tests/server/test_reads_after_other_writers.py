"""Read-your-writes across processes: once another process's append is acknowledged, the very
next GET shows it, although the server answers a running job's GET from memory."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created, NewEvent, RowSucceeded, Started
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import SqliteStore, Store, make_store
from jobtracker.store.keys import IssuedKey, issue_key
from tests.pg_database import drop_schema, new_schema_url

AiohttpClient = Callable[..., Awaitable[TestClient]]
WRITER = Path(__file__).with_name("other_writer.py")
JOB = "shared-job"
#: Appends by the other process, each followed at once by a GET: enough to catch a stale body.
ROUNDS = 60
TOTAL = 1000


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store two processes open: a SQLite file, or a PostgreSQL schema of this test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    url = new_schema_url(request.getfixturevalue("postgres_database"))
    yield url
    drop_schema(url)


@pytest.fixture
async def served(aiohttp_client: AiohttpClient, shared_url: str) -> tuple[TestClient, IssuedKey]:
    """A server on the shared store, with a running job of `TOTAL` rows and its owner's key."""
    store: Store = (SqliteStore(shared_url.removeprefix("sqlite:///"))
                    if shared_url.startswith("sqlite") else make_store(shared_url))
    client = await aiohttp_client(create_app(Settings(store_url=shared_url), store=store))
    owner = await issue_key(store, "owner")
    await store.create_job(JOB, Created(owner=owner.record.key_id, total=TOTAL))
    await store.append(JOB, [NewEvent("start", Started())])
    return client, owner


async def rows_shown(client: TestClient, key: IssuedKey) -> int:
    response = await client.get(f"/api/v1/jobs/{JOB}", headers={"X-API-Key": key.secret})
    assert response.status == 200
    body = await response.json()
    if body["status"] == "STARTED":  # no row yet
        return 0
    assert body["status"] == "PROGRESS"
    current: int = body["progress"]["current"]
    return current


async def test_a_row_another_process_appended_shows_in_the_next_get(
    served: tuple[TestClient, IssuedKey], shared_url: str
) -> None:
    """An SDK in another process appends a row at a time; the GET right after each
    acknowledgement counts that row, every time (a remembered body would lag behind)."""
    client, owner = served
    writer = await asyncio.create_subprocess_exec(
        sys.executable, str(WRITER), shared_url, owner.secret, JOB,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert writer.stdin is not None
    assert writer.stdout is not None
    try:
        assert await rows_shown(client, owner) == 0
        for row in range(1, ROUNDS + 1):
            assert await rows_shown(client, owner) == row - 1  # held in memory now
            writer.stdin.write(f"{row}\n".encode())
            await writer.stdin.drain()
            ack = await asyncio.wait_for(writer.stdout.readline(), 30)
            assert ack == f"ack {row}\n".encode()
            assert await rows_shown(client, owner) == row
    finally:
        writer.stdin.close()
        await writer.wait()


async def test_a_row_behind_a_thousand_other_events_still_shows(
    aiohttp_client: AiohttpClient, tmp_path: Path
) -> None:
    """Another connection appends 1,200 events to one job, then a row to the job being polled:
    the next GET shows that row (the catch-up reads the log past one batch's worth)."""
    path = str(tmp_path / "jobs.db")
    client = await aiohttp_client(create_app(Settings(store_url=f"sqlite:///{path}"),
                                             store=SqliteStore(path)))
    other = SqliteStore(path)
    await other.open()
    try:
        owner = await issue_key(other, "owner")
        for job in (JOB, "busy-job"):
            await other.create_job(job, Created(owner=owner.record.key_id))
            await other.append(job, [NewEvent(f"{job}-start", Started())])
        assert await rows_shown(client, owner) == 0
        for batch in range(2):
            await other.append("busy-job", [
                NewEvent(f"busy-{batch}-{n}", RowSucceeded(row=batch * 600 + n, email="a@b.c",
                                                           internal=True))
                for n in range(1, 601)
            ])
        await other.append(JOB, [NewEvent("r1", RowSucceeded(row=1, email="a@b.c",
                                                             internal=True))])
        assert await rows_shown(client, owner) == 1
    finally:
        await other.close()
