"""Receivers: `jobtracker.webhooks.verify` accepts a real delivery and refuses a forged one, and
the example receiver in scripts/ prints each event once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.webhooks import WebhookVerificationError, verify
from tests.conditions import until
from tests.reliability.test_crash import _free_port
from tests.webhooks.conftest import Receiver, append, create_job, subscribe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """Verifying is the receiver's business: one store is enough."""
    kind: str = request.param
    return kind


async def test_verify_accepts_a_delivery_and_refuses_a_forgery(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """The real delivery verifies and decodes; a changed body, another secret or a missing
    header raise `WebhookVerificationError`."""
    hook = await subscribe(client, owner, receiver.url, ["job.succeeded"])
    job_id = await create_job(client, owner)
    await append(client, owner, job_id, {"type": "succeeded"})
    await until(lambda: len(receiver.received) == 1, "the delivery")
    got = receiver.received[0]
    assert verify(got.headers, got.body, hook["secret"])["data"]["job_id"] == job_id
    forged = got.body.replace(b"SUCCESS", b"FAILURE")
    other = (await subscribe(client, owner, receiver.url, ["job.failed"]))["secret"]
    missing = {k: v for k, v in got.headers.items() if k != "webhook-signature"}
    for headers, body, secret in ((got.headers, forged, hook["secret"]),
                                  (got.headers, got.body, other),
                                  (missing, got.body, hook["secret"])):
        with pytest.raises(WebhookVerificationError):
            verify(headers, body, secret)


async def test_the_example_receiver_prints_each_event_once(
    client: TestClient, owner: dict[str, str], tmp_path: Path
) -> None:
    """scripts/webhook_receiver.py, subscribed like any receiver, prints the job's start and end
    (a repeat would be dropped by its webhook-id)."""
    port = _free_port()
    hook = await subscribe(client, owner, f"http://127.0.0.1:{port}/hook",
                           ["job.started", "job.succeeded"])
    out = tmp_path / "receiver.out"
    with out.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "scripts" / "webhook_receiver.py"), "--port", str(port),
            stdout=sink, stderr=sink,
            env={**os.environ, "JOBTRACKER_WEBHOOK_SECRET": hook["secret"]},
        )
    try:
        job_id = await create_job(client, owner)
        await append(client, owner, job_id, {"type": "started"})
        await append(client, owner, job_id, {"type": "succeeded"})
        await until(lambda: out.read_text().count(job_id) == 2, lambda: out.read_text(),
                    within=30)
    finally:
        process.terminate()
        await process.wait()
    lines = [line for line in out.read_text().splitlines() if job_id in line]
    assert "job.started" in lines[0]
    assert "job.succeeded" in lines[1]
    assert "SUCCESS" in lines[1]
