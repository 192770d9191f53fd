"""Job control over HTTP, on every store: lost workers are noticed, deadlines hold, owners cancel.

Each test runs the real app with its reaper; waits are long-polls on the job (`?wait=`), never
sleeps, so a test ends as soon as the server acts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store import replay as replaying
from jobtracker.store.keys import issue_key

GRACE = 1.0


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> TestClient:
    """The app on the per-kind store, with a one-second cancel grace."""
    await store.close()
    return await aiohttp_client(create_app(Settings(cancel_grace=GRACE), store=store))


@pytest.fixture
async def owner(client: TestClient, store: Store) -> dict[str, str]:
    """Headers of an owner key."""
    return {"X-API-Key": (await issue_key(store, "owner")).secret}


async def create(client: TestClient, headers: dict[str, str], **body: Any) -> str:
    answer = await client.post("/api/v1/jobs", json=body, headers=headers)
    assert answer.status == 201, await answer.text()
    return str((await answer.json())["job_id"])


async def append(client: TestClient, headers: dict[str, str], job_id: str,
                 *events: dict[str, Any]) -> dict[str, Any]:
    answer = await client.post(f"/api/v1/jobs/{job_id}/events", json=list(events),
                               headers=headers)
    assert answer.status == 200, await answer.text()
    body: dict[str, Any] = await answer.json()
    return body


async def wait_until_finished(
    client: TestClient, headers: dict[str, str], job_id: str, within: float
) -> tuple[dict[str, Any], float]:
    """Long-poll the job until it is terminal; its body and the seconds it took."""
    began = time.monotonic()
    while True:
        answer = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        body: dict[str, Any] = await answer.json()
        if body["status"] in ("SUCCESS", "FAILURE"):
            return body, time.monotonic() - began
        left = within - (time.monotonic() - began)
        assert left > 0, f"{job_id} still {body['status']} after {within} s"
        await client.get(
            f"/api/v1/jobs/{job_id}?wait={max(1, min(int(left) + 1, 60))}",
            headers={**headers, "If-None-Match": answer.headers["ETag"]},
        )


async def reaped(client: TestClient, reason: str) -> float:
    """`jobtracker_jobs_reaped_total{reason}` as the server's /metrics says it now."""
    text = await (await client.get("/metrics")).text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "jobtracker_jobs_reaped_total" and sample.labels["reason"] == reason
    )


async def history(client: TestClient, headers: dict[str, str], job_id: str) -> list[Any]:
    answer = await client.get(f"/api/v1/jobs/{job_id}/events", headers=headers)
    events: list[Any] = (await answer.json())["events"]
    return events


async def test_a_started_job_left_alone_fails_as_worker_lost(
    client: TestClient, owner: dict[str, str]
) -> None:
    """No event and no heartbeat for the heartbeat timeout: FAILURE `Worker lost`, within 2 s."""
    job_id = await create(client, owner, heartbeat_timeout=5)
    await append(client, owner, job_id, {"type": "started"})
    started = time.monotonic()
    body, _ = await wait_until_finished(client, owner, job_id, within=15)
    assert body == {"job_id": job_id, "status": "FAILURE",
                    "error": "Worker lost: no report for 5 s"}
    assert 5 <= time.monotonic() - started < 5 + 1 + 2
    ending = (await history(client, owner, job_id))[-1]
    assert (ending["type"], ending["reason"]) == ("failed", "worker_lost")


async def test_heartbeats_keep_a_busy_worker_alive_and_write_nothing(
    client: TestClient, owner: dict[str, str]
) -> None:
    """A worker heartbeating through a slow row outlives its timeout; no event, same ETag."""
    job_id = await create(client, owner, heartbeat_timeout=5)
    await append(client, owner, job_id, {"type": "started"})
    before = await client.get(f"/api/v1/jobs/{job_id}", headers=owner)
    until = time.monotonic() + 8
    while time.monotonic() < until:
        beat = await client.post(f"/api/v1/jobs/{job_id}/heartbeat", headers=owner)
        assert beat.status == 204
        await asyncio.sleep(1)  # the worker's own pace between heartbeats, not a wait on us
    after = await client.get(f"/api/v1/jobs/{job_id}", headers=owner)
    assert (await after.json())["status"] == "STARTED"
    assert after.headers["ETag"] == before.headers["ETag"]
    assert len(await history(client, owner, job_id)) == 2


async def test_a_heartbeat_does_not_wake_a_waiting_client(
    client: TestClient, owner: dict[str, str]
) -> None:
    """A held `?wait=` GET answers 304 at its end, however many heartbeats came meanwhile."""
    job_id = await create(client, owner, heartbeat_timeout=30)
    await append(client, owner, job_id, {"type": "started"})
    etag = (await client.get(f"/api/v1/jobs/{job_id}", headers=owner)).headers["ETag"]
    held = asyncio.create_task(client.get(
        f"/api/v1/jobs/{job_id}?wait=2", headers={**owner, "If-None-Match": etag}))
    began = time.monotonic()
    while not held.done():
        await client.post(f"/api/v1/jobs/{job_id}/heartbeat", headers=owner)
        await asyncio.sleep(0.2)
    assert (await held).status == 304
    assert time.monotonic() - began >= 1.9


@pytest.mark.parametrize("started", [False, True], ids=["pending", "progress"])
async def test_a_job_past_its_timeout_fails_as_timed_out(
    client: TestClient, owner: dict[str, str], started: bool
) -> None:
    """`timeout` seconds after creation a job not finished is FAILURE `Timed out`, PENDING too;
    the reaper counts it in `jobtracker_jobs_reaped_total`."""
    before = await reaped(client, "timed_out")
    job_id = await create(client, owner, timeout=1)
    if started:
        await append(client, owner, job_id, {"type": "progress", "current": 1, "total": 9})
    body, took = await wait_until_finished(client, owner, job_id, within=10)
    assert body == {"job_id": job_id, "status": "FAILURE", "error": "Timed out after 1 s"}
    assert took < 1 + 2
    assert (await history(client, owner, job_id))[-1]["reason"] == "timed_out"
    assert await reaped(client, "timed_out") == before + 1


async def test_cancelling_a_pending_job_ends_it_at_once(
    client: TestClient, owner: dict[str, str]
) -> None:
    """202 with the body: FAILURE `Cancelled`; asking again is 409."""
    job_id = await create(client, owner)
    answer = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=owner)
    assert answer.status == 202
    assert await answer.json() == {"job_id": job_id, "status": "FAILURE", "error": "Cancelled"}
    again = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=owner)
    assert again.status == 409
    assert (await history(client, owner, job_id))[-1]["reason"] == "cancelled"


async def test_cancelling_a_running_job_tells_its_worker_then_ends_it(
    client: TestClient, owner: dict[str, str]
) -> None:
    """The body and the next append answer say `cancel_requested`; after the grace period the
    server ends the job `Cancelled`; asking twice records one request."""
    job_id = await create(client, owner)
    await append(client, owner, job_id, {"type": "started"})
    answer = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=owner)
    assert answer.status == 202
    assert await answer.json() == {"job_id": job_id, "status": "STARTED",
                                   "cancel_requested": True}
    assert (await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=owner)).status == 202
    reported = await append(client, owner, job_id,
                            {"type": "progress", "current": 1, "total": 2})
    assert reported["cancel_requested"] is True
    beat = await client.post(f"/api/v1/jobs/{job_id}/heartbeat", headers=owner)
    assert beat.headers["X-Cancel-Requested"] == "true"
    body, took = await wait_until_finished(client, owner, job_id, within=10)
    assert body == {"job_id": job_id, "status": "FAILURE", "error": "Cancelled"}
    assert took < GRACE + 2
    kinds = [event["type"] for event in await history(client, owner, job_id)]
    assert kinds == ["created", "started", "cancel_requested", "progress", "failed"]


async def test_append_answers_leave_cancel_requested_out_until_asked(
    client: TestClient, owner: dict[str, str]
) -> None:
    """An append answer without a cancel request says `cancel_requested: false` at most."""
    job_id = await create(client, owner)
    reported = await append(client, owner, job_id, {"type": "started"})
    assert reported.get("cancel_requested", False) is False


async def test_job_control_refusals(
    client: TestClient, owner: dict[str, str], store: Store
) -> None:
    """Worker keys cannot cancel (403); finished jobs refuse heartbeats and cancels (409);
    unknown jobs are 404."""
    worker = {"X-API-Key": (await issue_key(store, "w", "worker", all_owners=True)).secret}
    job_id = await create(client, owner)
    assert (await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=worker)).status == 403
    assert (await client.post(f"/api/v1/jobs/{job_id}/heartbeat", headers=worker)).status == 204
    await append(client, owner, job_id, {"type": "succeeded"})
    for action in ("heartbeat", "cancel"):
        finished = await client.post(f"/api/v1/jobs/{job_id}/{action}", headers=owner)
        assert finished.status == 409
        assert "already SUCCESS" in (await finished.json())["detail"]
        unknown = await client.post(f"/api/v1/jobs/nope/{action}", headers=owner)
        assert (unknown.status, await unknown.json()) == (404, {"detail": "Job not found"})


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"heartbeat_timeout": 4}, "heartbeat_timeout: must be a whole number of seconds from 5"),
        ({"heartbeat_timeout": 86_401}, "heartbeat_timeout: must be a whole number"),
        ({"heartbeat_timeout": "60"}, "heartbeat_timeout: must be an integer"),
        ({"heartbeat_timeout": 7.5}, "heartbeat_timeout: must be an integer"),
        ({"timeout": 0}, "timeout: must be a whole number of seconds from 1 to 31536000"),
        ({"timeout": 31_536_001}, "timeout: must be a whole number"),
        ({"timeout": True}, "timeout: must be an integer"),
    ],
)
async def test_limits_out_of_range_are_refused_naming_the_field(
    client: TestClient, owner: dict[str, str], body: dict[str, Any], detail: str
) -> None:
    """422 naming the field, and no job is created."""
    answer = await client.post("/api/v1/jobs", json={"job_id": "limits", **body}, headers=owner)
    assert answer.status == 422
    assert (await answer.json())["detail"].startswith(detail)
    assert (await client.get("/api/v1/jobs/limits", headers=owner)).status == 404


async def test_replay_after_reaping_equals_the_live_projection(
    client: TestClient, owner: dict[str, str], store: Store
) -> None:
    """The server-written endings are events like any other: verify finds no difference."""
    lost = await create(client, owner, heartbeat_timeout=5)
    await append(client, owner, lost, {"type": "started"})
    late = await create(client, owner, timeout=1)
    cancelled = await create(client, owner)
    await append(client, owner, cancelled, {"type": "started"})
    await client.post(f"/api/v1/jobs/{cancelled}/cancel", headers=owner)
    for job_id in (late, cancelled, lost):
        await wait_until_finished(client, owner, job_id, within=15)
    report = await replaying.verify(store)  # type: ignore[arg-type]
    assert report.comparison is not None
    assert (report.comparison.differing, report.events) == (0, 3 + 2 + 4)
