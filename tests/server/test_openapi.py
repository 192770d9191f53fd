"""The OpenAPI document tells the truth: real responses validate against it."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate as validate_document

from jobtracker.server.openapi import document
from jobtracker.store.keys import IssuedKey


def check(doc: dict[str, Any], path: str, method: str, response: ClientResponse,
          body: Any) -> None:
    """Validate one real response against the document's schema for it."""
    answer = doc["paths"][path][method]["responses"][str(response.status)]
    content = answer.get("content", {}).get("application/json")
    if content is None:
        assert body is None, f"{method} {path} {response.status} has an undocumented body"
        return
    jsonschema.validate(body, {**doc, "$ref": content["schema"]["$ref"]})
    for header in answer.get("headers", {}):
        if header != "Retry-After" or body.get("status") not in ("SUCCESS", "FAILURE"):
            assert header in response.headers, f"{header} missing on {method} {path}"


async def test_openapi_document_is_served_and_valid(client: TestClient) -> None:
    """The document is public, and a valid OpenAPI 3.1 document."""
    response = await client.get("/api/v1/openapi.json")
    assert response.status == 200
    served = await response.json()
    validate_document(served)
    assert served == document()


async def test_real_responses_match_the_document(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """A tour through every status code the API answers, each checked against its schema."""
    doc = document()
    own = {"X-API-Key": owner_key.secret}

    async def call(method: str, path: str, url: str, **kwargs: Any) -> Any:
        response = await client.request(method.upper(), url, **kwargs)
        raw = await response.read()
        body = await response.json() if raw else None
        check(doc, path, method, response, body)
        return body

    jobs, job, events = "/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/events"
    await call("post", jobs, jobs, json={"job_id": "tour", "total": 50}, headers=own)
    await call("post", jobs, jobs, json={"job_id": "tour"}, headers=own)
    await call("post", jobs, jobs, json={"job_id": "tour"}, headers={"X-API-Key": other_key.secret})
    await call("post", jobs, jobs, data=b"{", headers=own)
    await call("post", jobs, jobs, json={"total": -1}, headers=own)
    await call("get", job, "/api/v1/jobs/tour", headers=own)
    await call("get", job, "/api/v1/jobs/tour", headers={"If-None-Match": '"1"', **own})
    await call("get", job, "/api/v1/jobs/tour?wait=99", headers=own)
    await call("post", events, "/api/v1/jobs/tour/events", json=[{"type": "started"}], headers=own)
    await call("get", job, "/api/v1/jobs/tour", headers=own)
    batch = [
        {"type": "row_succeeded", "row": 1, "email": "a@uni.edu", "internal": True},
        {"type": "row_failed", "row": 2, "email": "invalido@test", "error": "Invalid email"},
        {"type": "email_sent", "row": 1, "email": "a@uni.edu"},
        {"type": "progress", "current": 2, "total": 50, "status": None},
    ]
    await call("post", events, "/api/v1/jobs/tour/events", json=batch, headers=own)
    await call("get", job, "/api/v1/jobs/tour", headers=own)
    await call("post", events, "/api/v1/jobs/tour/events", json=batch[:1], headers=own)
    await call("post", events, "/api/v1/jobs/tour/events", json=[{"type": "x"}], headers=own)
    await call("post", events, "/api/v1/jobs/tour/events", data=b"{}", headers=own)
    await call("post", events, "/api/v1/jobs/tour/events", json=[{"type": "succeeded"}],
               headers=own)
    await call("get", job, "/api/v1/jobs/tour", headers=own)
    await call("get", job, "/api/v1/jobs/tour", headers={"X-API-Key": other_key.secret})
    await call("get", job, "/api/v1/jobs/nope", headers=own)
    await call("get", job, "/api/v1/jobs/tour")
    await call("post", jobs, jobs, json={"job_id": "gone"}, headers=own)
    await call("post", events, "/api/v1/jobs/gone/events", json=[{"type": "failed",
               "error": "Achievement not found"}], headers=own)
    await call("get", job, "/api/v1/jobs/gone", headers=own)
    history, errors = "/api/v1/jobs/{job_id}/events", "/api/v1/jobs/{job_id}/errors"
    await call("get", history, "/api/v1/jobs/tour/events?limit=2", headers=own)
    await call("get", history, "/api/v1/jobs/tour/events?after_version=5", headers=own)
    await call("get", history, "/api/v1/jobs/tour/events?after_version=x", headers=own)
    await call("get", history, "/api/v1/jobs/tour/events?colour=red", headers=own)
    await call("get", errors, "/api/v1/jobs/tour/errors", headers=own)
    await call("get", errors, "/api/v1/jobs/tour/errors?limit=0", headers=own)
    await call("get", errors, "/api/v1/jobs/nope/errors", headers=own)


def sse_events(text: str) -> list[dict[str, Any]]:
    """Server-sent events as an SSE parser hands them to a schema checker (comments dropped)."""
    events: list[dict[str, Any]] = []
    for block in text.split("\n\n"):
        fields: dict[str, Any] = {}
        data: list[str] = []
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            if name == "data":
                data.append(value)
            elif name == "id":
                fields["id"] = value
            elif name == "retry":
                fields["retry"] = int(value)
        if data:
            events.append({"event": "message", **fields, "data": "\n".join(data)})
    return events


async def test_stream_events_match_the_documented_event_schema(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Each event of a real stream validates against StreamEvent, and its data against Job."""
    doc = document()
    own = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "streamed", "total": 2}, headers=own)
    batch = [
        {"type": "started"},
        {"type": "row_succeeded", "row": 1, "email": "a@uni.edu", "internal": True},
        {"type": "row_failed", "row": 2, "email": "bad@", "error": "Invalid email: bad@"},
        {"type": "succeeded"},
    ]
    await client.post("/api/v1/jobs/streamed/events", json=batch, headers=own)
    response = await client.get("/api/v1/jobs/streamed/stream", headers=own)
    assert response.status == 200
    stream = doc["paths"]["/api/v1/jobs/{job_id}/stream"]["get"]["responses"]["200"]
    schema = stream["content"]["text/event-stream"]["schema"]
    events = sse_events(await response.text())
    assert [event["id"] for event in events] == ["5"]
    for event in events:
        jsonschema.validate(event, {**doc, **schema})
        job = {**doc, "$ref": "#/components/schemas/Job"}
        jsonschema.validate(orjson.loads(event["data"]), job)


async def test_job_control_responses_match_the_document(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Heartbeat and cancel answers, and a body with `cancel_requested`, validate."""
    doc = document()
    own = {"X-API-Key": owner_key.secret}
    job, events = "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/events"
    beat, cancel = "/api/v1/jobs/{job_id}/heartbeat", "/api/v1/jobs/{job_id}/cancel"

    async def call(method: str, path: str, url: str, **kwargs: Any) -> Any:
        response = await client.request(method.upper(), url, **kwargs)
        raw = await response.read()
        body = orjson.loads(raw) if raw else None
        check(doc, path, method, response, body)
        return body

    await client.post("/api/v1/jobs", json={"job_id": "ctl", "heartbeat_timeout": 60,
                                            "timeout": 3600}, headers=own)
    await call("post", events, "/api/v1/jobs/ctl/events", json=[{"type": "started"}], headers=own)
    await call("post", beat, "/api/v1/jobs/ctl/heartbeat", headers=own)
    await call("post", beat, "/api/v1/jobs/nope/heartbeat", headers=own)
    await call("post", cancel, "/api/v1/jobs/ctl/cancel", headers=own)
    await call("get", job, "/api/v1/jobs/ctl", headers=own)
    await call("post", events, "/api/v1/jobs/ctl/events",
               json=[{"type": "failed", "error": "Cancelled", "reason": "cancelled"}], headers=own)
    await call("post", cancel, "/api/v1/jobs/ctl/cancel", headers=own)
    await call("post", beat, "/api/v1/jobs/ctl/heartbeat", headers=own)
