"""Failures: a receiver answering 500 or down for a while gets everything once it recovers, each
retry under the same `webhook-id`; a 410 disables the subscription; one dead receiver does not
hold up another's deliveries."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp.test_utils import TestClient

from tests.conditions import until, until_async
from tests.webhooks.conftest import Receiver, append, create_job, subscribe


async def test_500s_are_retried_under_the_same_webhook_id_until_delivered(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """Each delivery's first two tries answer 500; the third is delivered with the id of the
    first, and the attempts list shows the 500s with their next try."""
    tries: Counter[str] = Counter()

    def flaky(got: object) -> int:
        msg_id = got.msg_id  # type: ignore[attr-defined]
        tries[msg_id] += 1
        return 500 if tries[msg_id] <= 2 else 200

    receiver.status = flaky
    hook = await subscribe(client, owner, receiver.url, ["job.succeeded"])
    jobs = [await create_job(client, owner) for _ in range(3)]
    for job_id in jobs:
        await append(client, owner, job_id, {"type": "succeeded"})
    await until(lambda: len(tries) == 3 and all(n == 3 for n in tries.values()),
                lambda: f"tries {dict(tries)}")
    assert sorted(r.json["data"]["job_id"] for r in receiver.received) == sorted(jobs * 3)
    answer = await client.get(f"/api/v1/webhooks/{hook['webhook_id']}/deliveries",
                              headers=owner)
    attempts = (await answer.json())["deliveries"]
    failed = [a for a in attempts if a["status"] == 500]
    assert failed
    assert all(a["next_attempt_at"] is not None for a in failed)


async def test_a_receiver_down_for_a_while_gets_every_event_once_it_is_back(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """The receiver stops listening; 10 jobs start and finish; it comes back on the same port
    and receives all 20 events, each job's in order."""
    await subscribe(client, owner, receiver.url, ["job.started", "job.succeeded"])
    port = receiver.port
    await receiver.stop()
    jobs = [await create_job(client, owner) for _ in range(10)]
    for job_id in jobs:
        await append(client, owner, job_id, {"type": "started"})
        await append(client, owner, job_id, {"type": "succeeded"})
    await asyncio.sleep(1.0)  # several tries fail meanwhile (the schedule is 0.2 s, 0.4 s)
    await receiver.start(port)
    await until(lambda: len({r.msg_id for r in receiver.received}) >= 20,
                lambda: f"got {len(receiver.received)}")
    for job_id in jobs:
        types = [r.json["type"] for r in receiver.of_job(job_id)]
        assert types == ["job.started", "job.succeeded"]


async def test_a_410_disables_the_subscription(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """The receiver answers 410 Gone: it is not called again, and the subscription shows
    `disabled_at`."""
    receiver.status = lambda got: 410
    hook = await subscribe(client, owner, receiver.url, ["job.started", "job.succeeded"])
    job_id = await create_job(client, owner)
    await append(client, owner, job_id, {"type": "started"})
    await until(lambda: len(receiver.received) == 1, "the first delivery")

    async def disabled() -> bool:
        answer = await client.get(f"/api/v1/webhooks/{hook['webhook_id']}", headers=owner)
        return (await answer.json())["disabled_at"] is not None

    await until_async(disabled, "the subscription disabled")
    await append(client, owner, job_id, {"type": "succeeded"})
    await asyncio.sleep(0.5)
    assert len(receiver.received) == 1


async def test_a_dead_receiver_does_not_hold_up_another(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """One subscription's receiver never answers (each try times out after 2 s); another
    subscription's events still arrive within a fraction of a second."""
    hung = Receiver()
    await hung.start()
    hung.delay = 30.0
    try:
        await subscribe(client, owner, hung.url, ["job.succeeded"])
        await subscribe(client, owner, receiver.url, ["job.succeeded"])
        jobs = [await create_job(client, owner) for _ in range(20)]
        for job_id in jobs:
            await append(client, owner, job_id, {"type": "succeeded"})
        await until(lambda: len(receiver.received) >= 20, "the healthy receiver's 20",
                    within=1.5)
    finally:
        await hung.stop()
