"""Managing subscriptions over HTTP: the secret once, a key sees only its own, bad input is a 422
naming the field with nothing written, and every attempt can be read back page by page."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import jsonschema
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate as validate_document

from jobtracker.domain.webhooks import MAX_SUBSCRIPTIONS
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import Store
from jobtracker.store.keys import issue_key
from tests.conditions import until, until_async
from tests.server.test_openapi import check as check_body
from tests.webhooks.conftest import Receiver, append, create_job, subscribe


@pytest.fixture(params=["sqlite"])
def store_kind(request: pytest.FixtureRequest) -> str:
    """The API's checks are the server's: one store is enough."""
    kind: str = request.param
    return kind


async def test_the_secret_is_shown_once_and_a_key_sees_only_its_own(
    client: TestClient, owner: dict[str, str], store: Store, receiver: Receiver
) -> None:
    """201 carries `whsec_...`; list and read never do; another key gets 404 on read, deliveries
    and delete, and its own list is empty; the owner's delete is 204, then 404."""
    made = await subscribe(client, owner, receiver.url, ["job.succeeded", "job.started"])
    assert made["secret"].startswith("whsec_")
    assert len(made["secret"]) > 40
    assert made["events"] == ["job.started", "job.succeeded"]
    assert made["labels"] == {}
    assert made["created_at"].endswith("Z")
    hook_id = made["webhook_id"]
    listed = await (await client.get("/api/v1/webhooks", headers=owner)).json()
    assert [h["webhook_id"] for h in listed["webhooks"]] == [hook_id]
    assert "secret" not in listed["webhooks"][0]
    one = await (await client.get(f"/api/v1/webhooks/{hook_id}", headers=owner)).json()
    assert "secret" not in one
    assert one["url"] == receiver.url

    other = {"X-API-Key": (await issue_key(store, "other")).secret}
    for method, path in (("GET", ""), ("GET", "/deliveries"), ("DELETE", "")):
        answer = await client.request(method, f"/api/v1/webhooks/{hook_id}{path}", headers=other)
        assert answer.status == 404
        assert await answer.json() == {"detail": "Webhook not found"}
    assert (await (await client.get("/api/v1/webhooks", headers=other)).json()) == {
        "webhooks": []}

    assert (await client.delete(f"/api/v1/webhooks/{hook_id}", headers=owner)).status == 204
    assert (await client.get(f"/api/v1/webhooks/{hook_id}", headers=owner)).status == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/x", "events": ["job.failed"]}, "url"),
        ({"url": "not a url", "events": ["job.failed"]}, "url"),
        ({"url": "http://user:pw@example.com/", "events": ["job.failed"]}, "url"),
        ({"url": 7, "events": ["job.failed"]}, "url"),
        ({"url": "http://127.0.0.1:1/", "events": ["job.finished"]}, "events[0]"),
        ({"url": "http://127.0.0.1:1/", "events": []}, "events"),
        ({"url": "http://127.0.0.1:1/", "events": ["job.failed"], "labels": {"A": "b"}},
         "labels"),
        ({"url": "http://127.0.0.1:1/", "events": ["job.failed"], "secret": "x"}, "secret"),
    ],
)
async def test_bad_subscriptions_are_422_naming_the_field(
    client: TestClient, owner: dict[str, str], body: dict[str, object], field: str
) -> None:
    """Each bad field is named in `detail`, and nothing is stored."""
    answer = await client.post("/api/v1/webhooks", json=body, headers=owner)
    assert answer.status == 422
    assert (await answer.json())["detail"].startswith(f"{field}:")
    assert (await (await client.get("/api/v1/webhooks", headers=owner)).json())["webhooks"] == []


async def test_more_than_twenty_subscriptions_per_key_are_refused(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """The 21st is 422 naming `url`; the 20 stay."""
    for _ in range(MAX_SUBSCRIPTIONS):
        await subscribe(client, owner, receiver.url, ["job.failed"])
    answer = await client.post("/api/v1/webhooks", headers=owner,
                               json={"url": receiver.url, "events": ["job.failed"]})
    assert answer.status == 422
    assert (await answer.json())["detail"].startswith("url:")
    listed = await (await client.get("/api/v1/webhooks", headers=owner)).json()
    assert len(listed["webhooks"]) == MAX_SUBSCRIPTIONS


async def test_https_only_unless_http_is_allowed(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> None:
    """Without `--webhook-allow-http` an `http://` URL is 422 naming `url`."""
    await store.close()
    client = await aiohttp_client(create_app(Settings(webhook_allow_private=True), store=store))
    headers = {"X-API-Key": (await issue_key(store, "owner")).secret}
    answer = await client.post("/api/v1/webhooks", headers=headers,
                               json={"url": "http://127.0.0.1:9/", "events": ["job.failed"]})
    assert answer.status == 422
    assert "https://" in (await answer.json())["detail"]


async def test_each_attempt_is_listed_newest_first_page_by_page(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """Deliveries show type, message id, job, time, status and duration; pages chain by token
    and a forged token is 422."""
    hook = await subscribe(client, owner, receiver.url, ["job.started", "job.succeeded"])
    job_id = await create_job(client, owner)
    await append(client, owner, job_id, {"type": "started"})
    await append(client, owner, job_id, {"type": "succeeded"})
    await until(lambda: len(receiver.received) >= 2, "both deliveries")
    path = f"/api/v1/webhooks/{hook['webhook_id']}/deliveries"

    async def page(query: str) -> dict[str, object]:
        answer = await client.get(path + query, headers=owner)
        assert answer.status == 200
        body: dict[str, object] = await answer.json()
        return body

    async def both_recorded() -> bool:
        return len((await page(""))["deliveries"]) == 2  # type: ignore[arg-type]

    await until_async(both_recorded, "both attempts recorded")
    first = await page("?limit=1")
    [newest] = first["deliveries"]  # type: ignore[misc]
    assert newest["type"] == "job.succeeded"
    assert newest["status"] == 200
    assert newest["job_id"] == job_id
    assert newest["message_id"].startswith("msg_")
    assert newest["error"] is None
    assert newest["next_attempt_at"] is None
    assert newest["duration_ms"] >= 0
    assert newest["attempted_at"].endswith("Z")
    second = await page(f"?limit=1&page_token={first['next_page_token']}")
    assert [d["type"] for d in second["deliveries"]] == ["job.started"]  # type: ignore[attr-defined]
    assert second["next_page_token"] is None
    forged = await client.get(path + "?page_token=bm9wZQ", headers=owner)
    assert forged.status == 422
    assert (await forged.json())["detail"].startswith("page_token:")


async def test_webhook_answers_match_the_openapi_document(
    client: TestClient, owner: dict[str, str], receiver: Receiver
) -> None:
    """Creation, list, read, deliveries, 404 and 422 answers, and a delivery's body, each
    validate against the served document's schemas."""
    doc = await (await client.get("/api/v1/openapi.json")).json()
    validate_document(doc)

    async def check(doc: dict[str, Any], path: str, method: str,
                    response: ClientResponse) -> None:
        check_body(doc, path, method, response, await response.json())

    made = await client.post("/api/v1/webhooks", headers=owner,
                             json={"url": receiver.url, "events": ["job.succeeded"]})
    await check(doc, "/api/v1/webhooks", "post", made)
    hook_id = (await made.json())["webhook_id"]
    job_id = await create_job(client, owner)
    await append(client, owner, job_id, {"type": "succeeded"})
    await until(lambda: len(receiver.received) == 1, "the delivery")
    jsonschema.validate(receiver.received[0].json,
                        {**doc, "$ref": "#/components/schemas/WebhookEvent"})
    one = f"/api/v1/webhooks/{hook_id}"
    await check(doc, "/api/v1/webhooks", "get", await client.get("/api/v1/webhooks",
                                                                headers=owner))
    await check(doc, "/api/v1/webhooks/{webhook_id}", "get", await client.get(one, headers=owner))
    await check(doc, "/api/v1/webhooks/{webhook_id}/deliveries", "get",
                await client.get(one + "/deliveries", headers=owner))
    await check(doc, "/api/v1/webhooks/{webhook_id}", "get",
                await client.get("/api/v1/webhooks/wh_nope", headers=owner))
    await check(doc, "/api/v1/webhooks", "post", await client.post(
        "/api/v1/webhooks", headers=owner, json={"url": receiver.url, "events": ["x"]}))


async def test_the_secret_never_reaches_a_log_line(
    client: TestClient, owner: dict[str, str], receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With every logger at DEBUG, making a webhook, delivering to it (one 500 first) and
    reading it back log nothing that holds the secret or its base64 key."""
    caplog.set_level(logging.DEBUG)
    tries: list[str] = []
    receiver.status = lambda got: 500 if not tries.append(got.msg_id) and len(tries) == 1 else 200
    hook = await subscribe(client, owner, receiver.url, ["job.succeeded"])
    job_id = await create_job(client, owner)
    await append(client, owner, job_id, {"type": "succeeded"})
    await until(lambda: len(receiver.received) == 2, "a retry and a delivery")
    await client.get(f"/api/v1/webhooks/{hook['webhook_id']}/deliveries", headers=owner)
    secret = hook["secret"]
    assert caplog.records, "logging was not captured"
    for record in caplog.records:
        line = record.getMessage()
        assert secret not in line
        assert secret.removeprefix("whsec_") not in line
