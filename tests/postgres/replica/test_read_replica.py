"""GET /api/v1/jobs/{id} from a streaming replica: maybe stale without a floor, fresh with one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobtracker.store import replay
from jobtracker.store.postgres import PostgresStore
from tests.postgres.replica.conftest import ReplicaServer, Replicated


async def _create(server: ReplicaServer, job_id: str) -> None:
    answer = await server.client.post("/api/v1/jobs", json={"job_id": job_id, "total": 50},
                                      headers=server.headers)
    assert answer.status == 201, await answer.text()


async def _append(server: ReplicaServer, job_id: str, *events: dict[str, Any]) -> int:
    """Append `events`; the version the append was answered with."""
    answer = await server.client.post(f"/api/v1/jobs/{job_id}/events", json=list(events),
                                      headers=server.headers)
    assert answer.status == 200, await answer.text()
    version: int = (await answer.json())["version"]
    return version


async def _get(server: ReplicaServer, job_id: str, query: str = "",
               **headers: str) -> tuple[int, str | None, Any]:
    answer = await server.client.get(f"/api/v1/jobs/{job_id}{query}",
                                     headers={**server.headers, **headers})
    body = await answer.json() if answer.status != 304 else None
    return answer.status, answer.headers.get("ETag"), body


def _progress(current: int) -> dict[str, Any]:
    return {"type": "progress", "current": current, "total": 50}


async def test_min_version_reads_your_write_while_the_replica_replays_nothing(
    replica_server: ReplicaServer, replicated: Replicated
) -> None:
    """With replay paused a plain GET shows the replica's older body; the same GET with the
    append's min_version shows the append, from the primary, after a bounded wait."""
    await _create(replica_server, "job-1")
    await _append(replica_server, "job-1", {"type": "started"})
    replicated.pair.wait_for_replay()
    with replicated.replay_paused():
        version = await _append(replica_server, "job-1", _progress(7))

        stale = await _get(replica_server, "job-1")
        fresh = await _get(replica_server, "job-1", f"?min_version={version}")

    assert stale == (200, '"2"', {"job_id": "job-1", "status": "STARTED"})
    status, tag, body = fresh
    assert (status, tag) == (200, f'"{version}"')
    assert body["status"] == "PROGRESS"
    assert body["progress"]["current"] == 7


async def test_min_version_reads_your_write_from_a_working_replica(
    replica_server: ReplicaServer,
) -> None:
    """Every GET sent with the version its append was answered with shows that append."""
    await _create(replica_server, "job-1")
    for current in range(1, 31):
        version = await _append(replica_server, "job-1", _progress(current))

        status, tag, body = await _get(replica_server, "job-1", f"?min_version={version}")

        assert (status, tag) == (200, f'"{version}"')
        assert body["progress"]["current"] == current


async def test_a_pollers_etag_never_gets_an_older_body_from_a_lagging_replica(
    replica_server: ReplicaServer, replicated: Replicated
) -> None:
    """A client holding the newest ETag gets 304, never the replica's older body."""
    await _create(replica_server, "job-1")
    replicated.pair.wait_for_replay()
    with replicated.replay_paused():
        version = await _append(replica_server, "job-1", {"type": "started"})

        answer = await _get(replica_server, "job-1", **{"If-None-Match": f'"{version}"'})

    assert answer == (304, f'"{version}"', None)


async def test_a_job_created_a_moment_ago_is_found_before_the_replica_has_it(
    replica_server: ReplicaServer, replicated: Replicated
) -> None:
    """A job id is answered (never 404) as soon as its creation was, replica or not."""
    with replicated.replay_paused():
        await _create(replica_server, "job-new")

        answer = await _get(replica_server, "job-new")

    assert answer == (200, '"1"', {"job_id": "job-new", "status": "PENDING"})


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5", "", "%C2%B2", "99999999999999999"])
async def test_a_bad_min_version_is_422_naming_it_and_changes_nothing(
    replica_server: ReplicaServer, raw: str
) -> None:
    """A min_version that is not a whole number from 0 is refused, for a running job and a
    finished one alike, and the job stays as it was."""
    await _create(replica_server, "job-1")
    await _create(replica_server, "job-done")
    await _append(replica_server, "job-done", {"type": "succeeded"})
    await _get(replica_server, "job-done")  # now served from the finished-body cache

    for job_id in ("job-1", "job-done"):
        status, _, body = await _get(replica_server, job_id, f"?min_version={raw}")
        assert status == 422
        assert body["detail"].startswith("min_version: must be a whole number")
    assert await _get(replica_server, "job-1") == (
        200, '"1"', {"job_id": "job-1", "status": "PENDING"})


async def test_a_replay_repair_reaches_a_server_that_reads_a_lagging_standby(
    replica_server: ReplicaServer, replicated: Replicated
) -> None:
    """A finished job's projection one success off; its body held by the server. A replay on the
    primary repairs it while the standby replays nothing: the server may show the old body while
    the standby lags, but once the standby has the repair, GET shows it (the server hears of the
    swap through the standby, so it never holds again what the lagging standby still showed)."""
    await _create(replica_server, "job-1")
    for event in ({"type": "started"},
                  {"type": "row_succeeded", "row": 0, "email": "a@uni.edu", "internal": True},
                  {"type": "succeeded"}):
        await _append(replica_server, "job-1", event)
    schema = replicated.primary_url.split("search_path=")[1]
    replicated.pair.sql(replicated.pair.primary_url(),
                        f'UPDATE "{schema}".jobs SET successful = 2 WHERE job_id = \'job-1\'')
    replicated.pair.wait_for_replay()

    async def successful() -> int:
        status, _, body = await _get(replica_server, "job-1")
        assert status == 200
        count: int = body["result"]["successful"]
        return count

    assert await successful() == 2  # read once, then held
    with replicated.replay_paused():
        store = PostgresStore(replicated.primary_url, pool_size=1)
        await store.open()
        try:
            await replay.rebuild(store)
        finally:
            await store.close()
        # Longer than two looks at the swaps: a server that heard of the swap from the primary
        # would drop the body and hold the standby's stale one again in this time.
        for _ in range(25):
            assert await successful() == 2
            await asyncio.sleep(0.1)
    async with asyncio.timeout(15):
        while await successful() != 1:  # noqa: ASYNC110 - the server's memory, not our event
            await asyncio.sleep(0.05)
