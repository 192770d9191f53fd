"""Signed deliveries from the log to a real receiver: every event type, in order per job, with
the job's body at that version, progress coalesced, only the subscriber's (labelled) jobs."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
from collections.abc import Awaitable, Callable

from aiohttp.test_utils import TestClient

from jobtracker.store import Store
from jobtracker.store.keys import issue_key
from jobtracker.store.retention import prune_all
from tests.conditions import until, until_async
from tests.webhooks.conftest import ALL_TYPES, Receiver, append, create_job, subscribe


async def test_every_event_type_arrives_signed_with_the_body_at_its_version(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """started, progress, cancel_requested and succeeded/failed each arrive once, verifiable
    with the standard's own library, carrying the job's GET body as it was then."""
    hook = await subscribe(client, owner, receiver.url, ALL_TYPES)
    done = await create_job(client, owner, total=2)
    await append(client, owner, done, {"type": "started"})
    await append(client, owner, done, {"type": "row_succeeded", "row": 0, "email": "a@x.io",
                                       "internal": True})
    await append(client, owner, done, {"type": "succeeded"})
    cancelled = await create_job(client, owner)
    await append(client, owner, cancelled, {"type": "started"})
    assert (await client.post(f"/api/v1/jobs/{cancelled}/cancel", headers=owner)).status == 202
    await append(client, owner, cancelled, {"type": "failed", "error": "Cancelled"})

    await until(lambda: len(receiver.received) >= 6,
                lambda: f"got {[r.json['type'] for r in receiver.received]}")
    bodies = receiver.verified(hook["secret"])
    assert [(b["type"], b["data"]["status"]) for b in bodies if b["data"]["job_id"] == done] == [
        ("job.started", "STARTED"), ("job.progress", "PROGRESS"), ("job.succeeded", "SUCCESS")]
    succeeded = bodies[[b["type"] for b in bodies].index("job.succeeded")]
    assert succeeded["data"]["result"]["successful"] == 1
    assert [b["type"] for b in bodies if b["data"]["job_id"] == cancelled] == [
        "job.started", "job.cancel_requested", "job.failed"]
    assert all(r.msg_id.startswith("msg_") for r in receiver.received)
    assert len({r.msg_id for r in receiver.received}) == 6


async def test_a_job_s_events_arrive_in_log_order(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """Twenty jobs interleaved: each job's deliveries arrive in the order its log has them, even
    though the receiver answers slowly and several are in flight at once."""
    receiver.delay = 0.02
    await subscribe(client, owner, receiver.url, ["job.started", "job.cancel_requested",
                                                  "job.failed"])
    jobs = [await create_job(client, owner) for _ in range(20)]
    for job_id in jobs:
        await append(client, owner, job_id, {"type": "started"})
    for job_id in jobs:
        await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=owner)
    for job_id in jobs:
        await append(client, owner, job_id, {"type": "failed", "error": "stopped"})
    await until(lambda: len(receiver.received) >= 60, lambda: f"got {len(receiver.received)}")
    for job_id in jobs:
        assert [r.json["type"] for r in receiver.of_job(job_id)] == [
            "job.started", "job.cancel_requested", "job.failed"]


async def test_progress_is_coalesced_and_carries_the_newest_body(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """Fifty progress reports in quick succession become a few deliveries at most one per
    interval (1 s here), the last with the newest counts, and the job's end is not held back."""
    await subscribe(client, owner, receiver.url, ["job.progress", "job.succeeded"])
    job_id = await create_job(client, owner)
    for n in range(1, 51):
        await append(client, owner, job_id, {"type": "progress", "current": n, "total": 50})
    await until(lambda: len(receiver.received) >= 1, "first progress")
    await until(lambda: any(r.json["data"]["progress"]["current"] == 50
                            for r in receiver.received if r.json["type"] == "job.progress"),
                "the newest progress")
    await append(client, owner, job_id, {"type": "succeeded"})
    await until(lambda: receiver.received[-1].json["type"] == "job.succeeded", "the end")
    progress = [r for r in receiver.received if r.json["type"] == "job.progress"]
    assert 1 <= len(progress) <= 3
    currents = [r.json["data"]["progress"]["current"] for r in progress]
    assert currents == sorted(currents)
    assert currents[-1] == 50
    gaps = [b.at - a.at for a, b in itertools.pairwise(progress)]
    assert all(gap >= 0.9 for gap in gaps), gaps


async def test_only_the_subscriber_s_jobs_with_matching_labels_are_delivered(
    client: TestClient, owner: dict[str, str], receiver: Receiver, store: Store
) -> None:
    """Another key's jobs never reach this key's receiver; with `labels`, only jobs carrying
    every pair do."""
    other = {"X-API-Key": (await issue_key(store, "other")).secret}
    await subscribe(client, owner, receiver.url, ["job.succeeded"],
                    labels={"achievement": "42"})
    wanted = await create_job(client, owner, labels={"achievement": "42", "batch": "b"})
    unlabelled = await create_job(client, owner)
    elsewhere = await create_job(client, owner, labels={"achievement": "7"})
    theirs = await create_job(client, other, labels={"achievement": "42"})
    for job_id, headers in ((unlabelled, owner), (elsewhere, owner), (theirs, other),
                            (wanted, owner)):
        await append(client, headers, job_id, {"type": "succeeded"})
    await until(lambda: len(receiver.received) >= 1, "the labelled job")
    finished = await create_job(client, owner, labels={"achievement": "42"})
    await append(client, owner, finished, {"type": "succeeded"})
    await until(lambda: len(receiver.received) >= 2, "the second labelled job")
    assert [r.json["data"]["job_id"] for r in receiver.received] == [wanted, finished]


async def test_retention_prunes_the_attempts_made_before_its_cutoff_and_keeps_the_rest(
    client: TestClient, owner: dict[str, str], receiver: Receiver, store: Store
) -> None:
    """`prune_all` (what `serve --retention` and `jobtracker prune` run) deletes the webhook
    attempts made before its cutoff, as it does the jobs finished before it: the deliveries
    list keeps only the later ones, and a cutoff before every attempt deletes none."""
    hook = await subscribe(client, owner, receiver.url, ["job.succeeded"])
    path = f"/api/v1/webhooks/{hook['webhook_id']}/deliveries"

    async def listed() -> list[str]:
        answer = await client.get(path, headers=owner)
        assert answer.status == 200
        return [d["job_id"] for d in (await answer.json())["deliveries"]]

    async def finish(job_id: str, seen: int) -> None:
        await append(client, owner, job_id, {"type": "succeeded"})
        await until(lambda: len(receiver.received) >= seen, f"delivery {seen}")
        await until_async(lambda: _count(listed, seen), f"attempt {seen} recorded")

    started = dt.datetime.now(dt.UTC)
    old, new = await create_job(client, owner), await create_job(client, owner)
    await finish(old, 1)
    await asyncio.sleep(0.05)
    cutoff = dt.datetime.now(dt.UTC)
    await asyncio.sleep(0.05)
    await finish(new, 2)

    assert await prune_all(store, started, batch=1) == (0, 0)
    assert await listed() == [new, old]
    await prune_all(store, cutoff, batch=1)
    assert await listed() == [new]


async def _count(listed: Callable[[], Awaitable[list[str]]], count: int) -> bool:
    return len(await listed()) == count
