"""Operations in one process: /healthz, /readyz, /metrics as Prometheus reads them, request ids."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from jobtracker.domain.events import Created, NewEvent, Started, Succeeded, new_event_id
from jobtracker.server.app import FEED, create_app
from jobtracker.server.logs import redact, request_id_for
from jobtracker.server.metrics import count_reaped
from jobtracker.server.settings import Settings
from jobtracker.store import Store, replay
from jobtracker.store.keys import IssuedKey, hash_secret, issue_key
from jobtracker.store.rebuild import Rebuildable
from tests.conditions import until_async

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CONTRACT_FAMILIES = [
    "jobtracker_http_requests", "jobtracker_http_request_duration_seconds",
    "jobtracker_events_appended", "jobtracker_appends_rejected", "jobtracker_commit_group_size",
    "jobtracker_jobs", "jobtracker_waiters", "jobtracker_jobs_reaped",
    "jobtracker_webhook_deliveries", "jobtracker_store_errors",
]
JOB_ROUTE = "/api/v1/jobs/{job_id}"
MADE_ID = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")


def parse(text: str) -> tuple[set[str], Samples]:
    """The family names and every sample, read with prometheus_client's own parser."""
    names: set[str] = set()
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return names, found


async def scrape(client: TestClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await response.text())[1]


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def headers(key: IssuedKey, **extra: str) -> dict[str, str]:
    return {"X-API-Key": key.secret, **extra}


async def create(client: TestClient, key: IssuedKey, job_id: str) -> None:
    response = await client.post("/api/v1/jobs", json={"job_id": job_id}, headers=headers(key))
    assert response.status == 201


async def append(client: TestClient, key: IssuedKey, job_id: str, events: Any) -> int:
    response = await client.post(f"/api/v1/jobs/{job_id}/events", json=events,
                                 headers=headers(key))
    return response.status


# --- health ------------------------------------------------------------------------------------


async def test_healthz_says_ok_without_a_key(client: TestClient) -> None:
    """A load balancer needs no key to see the process is up."""
    response = await client.get("/healthz")
    assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_readyz_is_ready_when_the_store_answers_with_a_current_schema(
    client: TestClient,
) -> None:
    """Every store, freshly migrated: ready."""
    response = await client.get("/readyz")
    assert (response.status, await response.json()) == (200, {"status": "ready"})


async def _forget_newest_migration(kind: str, tmp_path: Path, postgres_url: str | None) -> str:
    """Make the store look one migration behind; the name of the one it now lacks."""
    if kind == "sqlite":
        with sqlite3.connect(tmp_path / "jobs.db") as conn:
            (name,) = conn.execute("SELECT max(name) FROM schema_migrations").fetchone()
            conn.execute("DELETE FROM schema_migrations WHERE name = ?", (name,))
        return str(name)
    assert postgres_url is not None
    conn = await asyncpg.connect(postgres_url)
    try:
        name = await conn.fetchval("SELECT max(name) FROM schema_migrations")
        await conn.execute("DELETE FROM schema_migrations WHERE name = $1", name)
        return str(name)
    finally:
        await conn.close()


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)
async def test_readyz_is_503_naming_a_migration_the_store_lacks(
    client: TestClient, store_kind: str, tmp_path: Path, postgres_url: str | None
) -> None:
    """A schema behind this version is not ready, and the answer says which migration is missing
    and what to run."""
    missing = await _forget_newest_migration(store_kind, tmp_path, postgres_url)
    response = await client.get("/readyz")
    assert response.status == 503
    detail = (await response.json())["detail"]
    assert missing in detail
    assert "jobtracker migrate" in detail


async def test_readyz_is_503_once_the_server_begins_to_stop(client: TestClient) -> None:
    """A stopping server tells its load balancer to send traffic elsewhere."""
    await client.app[FEED].stop()
    response = await client.get("/readyz")
    assert response.status == 503
    assert "shutting down" in (await response.json())["detail"]


# --- request ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
async def test_a_sane_request_id_is_echoed_on_every_kind_of_answer(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """200, 304, 401, 404, 422, an unmatched path and an event stream all echo `X-Request-ID`."""
    await create(client, owner_key, "rid")
    given = "Req-42_a.b"
    answers = [
        await client.get("/api/v1/jobs/rid", headers=headers(owner_key, **{"X-Request-ID": given})),
        await client.get("/api/v1/jobs/rid", headers=headers(
            owner_key, **{"X-Request-ID": given, "If-None-Match": '"1"'})),
        await client.get("/api/v1/jobs/rid", headers={"X-Request-ID": given}),
        await client.get("/api/v1/jobs/nope",
                         headers=headers(owner_key, **{"X-Request-ID": given})),
        await client.post("/api/v1/jobs/rid/events", json=[], headers=headers(
            owner_key, **{"X-Request-ID": given})),
        await client.get("/no/such/path", headers={"X-Request-ID": given}),
    ]
    assert [a.status for a in answers] == [200, 304, 401, 404, 422, 404]
    assert all(a.headers["X-Request-ID"] == given for a in answers)
    async with client.get("/api/v1/jobs/rid/stream",
                          headers=headers(owner_key, **{"X-Request-ID": given})) as stream:
        assert stream.headers["X-Request-ID"] == given
        assert stream.headers["X-Accel-Buffering"] == "no"


@pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
async def test_a_missing_or_insane_request_id_is_replaced_by_a_fresh_one(
    client: TestClient,
) -> None:
    """Too long, odd characters or none at all: the server makes an id, a new one every time."""
    made = []
    for given in [None, "x" * 129, "has space", "semi;colon", "ünïcode", ""]:
        sent = {} if given is None else {"X-Request-ID": given}
        response = await client.get("/healthz", headers=sent)
        made.append(response.headers["X-Request-ID"])
    assert all(MADE_ID.fullmatch(each) for each in made), made
    assert len(set(made)) == len(made)
    assert request_id_for("a" * 128) == "a" * 128


# --- metrics -----------------------------------------------------------------------------------


@pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
async def test_every_family_the_contract_names_is_exposed(client: TestClient) -> None:
    """Prometheus's own parser finds all ten families in one scrape."""
    response = await client.get("/metrics")
    names, _ = parse(await response.text())
    assert set(CONTRACT_FAMILIES) <= names


async def test_requests_are_counted_under_the_route_template_never_the_id(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Three GETs of two jobs move one series by three; no label holds a job id or the key."""
    for job_id in ("job-a", "job-b"):
        await create(client, owner_key, job_id)
    before = await scrape(client)
    for job_id in ("job-a", "job-b", "job-a"):
        response = await client.get(f"/api/v1/jobs/{job_id}", headers=headers(owner_key))
        assert response.status == 200
    after = await scrape(client)
    ok = {"method": "GET", "route": JOB_ROUTE, "status": "200"}
    assert (value(after, "jobtracker_http_requests_total", **ok)
            - value(before, "jobtracker_http_requests_total", **ok)) == 3
    timed = {"method": "GET", "route": JOB_ROUTE}
    assert (value(after, "jobtracker_http_request_duration_seconds_count", **timed)
            - value(before, "jobtracker_http_request_duration_seconds_count", **timed)) == 3
    labels = {label for (_, labels) in after for _, label in labels}
    assert not labels & {"job-a", "job-b", owner_key.secret, hash_secret(owner_key.secret)}


async def test_durations_land_in_the_buckets_they_fall_in(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Three quick GETs and one long poll held a second: the quick ones count in every bucket
    from 0.5 s up, the held one only from 2.5 s up, and the sum holds the second it waited."""
    await create(client, owner_key, "timed")
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get("/api/v1/jobs/timed", headers=headers(owner_key))).status == 200
    tag = (await client.get("/api/v1/jobs/timed", headers=headers(owner_key))).headers["ETag"]
    held = await client.get("/api/v1/jobs/timed?wait=1",
                            headers=headers(owner_key, **{"If-None-Match": tag}))
    assert held.status == 304
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        timed = {"method": "GET", "route": JOB_ROUTE, **labels}
        return value(after, name, **timed) - value(before, name, **timed)

    bucket = "jobtracker_http_request_duration_seconds_bucket"
    assert moved(bucket, le="0.5") == 4  # the three GETs and the one that read the tag
    assert moved(bucket, le="1.0") == 4
    assert moved(bucket, le="2.5") == 5
    assert moved(bucket, le="+Inf") == 5
    assert 1.0 <= moved("jobtracker_http_request_duration_seconds_sum") < 2.5


@pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
async def test_unmatched_paths_and_odd_methods_share_fixed_labels(client: TestClient) -> None:
    """A hundred random paths and a method no route has (PROPFIND) add no label value."""
    before = await scrape(client)
    for n in range(100):
        assert (await client.get(f"/random/{n}/path")).status == 404
    assert (await client.request("PROPFIND", "/healthz")).status == 405
    after = await scrape(client)
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert (value(after, "jobtracker_http_requests_total", **unmatched)
            - value(before, "jobtracker_http_requests_total", **unmatched)) == 100
    other = {"method": "other", "route": "unmatched", "status": "405"}
    assert (value(after, "jobtracker_http_requests_total", **other)
            - value(before, "jobtracker_http_requests_total", **other)) == 1
    routes = {dict(labels).get("route") for (_, labels) in after}
    assert not any(route and "random" in route for route in routes)


async def test_appends_count_their_events_and_their_commit_groups(
    client: TestClient, owner_key: IssuedKey, store_kind: str
) -> None:
    """Two appends of 2 and 3 events (one a re-send) add 4 events; SQL stores observe groups."""
    await create(client, owner_key, "appended")
    before = await scrape(client)
    started = {"type": "started", "event_id": "e-start"}
    assert await append(client, owner_key, "appended", [started, {"type": "progress",
                                                                  "current": 1, "total": 5}]) == 200
    resend = [started, *({"type": "progress", "current": n, "total": 5} for n in (2, 3))]
    assert await append(client, owner_key, "appended", resend) == 200
    after = await scrape(client)
    assert (value(after, "jobtracker_events_appended_total")
            - value(before, "jobtracker_events_appended_total")) == 4
    groups = (value(after, "jobtracker_commit_group_size_count")
              - value(before, "jobtracker_commit_group_size_count"))
    assert groups == (0 if store_kind == "memory" else 2)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_refused_appends_are_counted_by_reason(
    client: TestClient, owner_key: IssuedKey, other_key: IssuedKey
) -> None:
    """422 a bad event, 409 a finished job, 403 another's job, 404 no job: each by its reason."""
    await create(client, owner_key, "refused")
    assert await append(client, owner_key, "refused", [{"type": "succeeded"}]) == 200
    before = await scrape(client)
    assert await append(client, owner_key, "refused", [{"type": "nope"}]) == 422
    assert await append(client, owner_key, "refused", [{"type": "started"}]) == 409
    assert await append(client, other_key, "refused", [{"type": "started"}]) == 403
    assert await append(client, owner_key, "missing", [{"type": "started"}]) == 404
    after = await scrape(client)
    moved = {
        reason: value(after, "jobtracker_appends_rejected_total", reason=reason)
        - value(before, "jobtracker_appends_rejected_total", reason=reason)
        for reason in ("invalid", "conflict", "forbidden", "not_found")
    }
    assert moved == {"invalid": 1, "conflict": 1, "forbidden": 1, "not_found": 1}


async def _jobs_by_status(client: TestClient) -> dict[str, float]:
    found = await scrape(client)
    statuses = ("PENDING", "STARTED", "PROGRESS", "SUCCESS", "FAILURE")
    return {status: value(found, "jobtracker_jobs", status=status) for status in statuses}


async def test_job_counts_follow_every_status_change(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Created, started, in progress, succeeded, failed: the gauge follows each job's status."""
    for job_id in ("c1", "c2", "c3", "c4", "c5"):
        await create(client, owner_key, job_id)
    assert (await _jobs_by_status(client))["PENDING"] == 5
    await append(client, owner_key, "c2", [{"type": "started"}])
    await append(client, owner_key, "c3", [{"type": "progress", "current": 1, "total": 2}])
    await append(client, owner_key, "c4", [{"type": "started"}, {"type": "succeeded"}])
    await append(client, owner_key, "c5", [{"type": "failed", "error": "no"}])
    await append(client, owner_key, "c3", [{"type": "progress", "current": 2, "total": 2}])
    assert await _jobs_by_status(client) == {
        "PENDING": 1, "STARTED": 1, "PROGRESS": 1, "SUCCESS": 1, "FAILURE": 1}


@pytest.mark.parametrize("store_kind", ["sqlite", "postgres"], indirect=True)
async def test_job_counts_follow_a_replay_that_repairs_the_projection(
    client: TestClient, store: Store, owner_key: IssuedKey, store_kind: str,
    tmp_path: Path, postgres_url: str | None,
) -> None:
    """A projection row damaged by hand is counted as damaged; after `replay` the counts are the
    log's again (SQLite swaps whole tables in, PostgreSQL rewrites the rows that differ)."""
    await store.create_job("r1", Created(owner=owner_key.record.key_id))
    await store.append("r1", [NewEvent(new_event_id(), Started()),
                              NewEvent(new_event_id(), Succeeded())])
    await store.create_job("r2", Created(owner=owner_key.record.key_id))
    damage = "UPDATE jobs SET status = 'FAILURE' WHERE job_id = 'r1'"
    if store_kind == "sqlite":
        with sqlite3.connect(tmp_path / "jobs.db") as conn:
            conn.execute(damage)
    else:
        conn = await asyncpg.connect(postgres_url)
        await conn.execute(damage)
        await conn.close()
    assert (await _jobs_by_status(client))["FAILURE"] == 1
    assert isinstance(store, Rebuildable)
    await replay.rebuild(store)
    counts = await _jobs_by_status(client)
    assert (counts["SUCCESS"], counts["FAILURE"], counts["PENDING"]) == (1, 0, 1)


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
async def test_waiters_count_held_long_polls_and_open_streams(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """A held `?wait=` and an open stream each show in `jobtracker_waiters` until they end."""
    await create(client, owner_key, "held")

    async def waiting(kind: str) -> float:
        return value(await scrape(client), "jobtracker_waiters", kind=kind)

    polls, streams = await waiting("long-poll"), await waiting("stream")
    held = asyncio.ensure_future(client.get(
        "/api/v1/jobs/held?wait=30", headers=headers(owner_key, **{"If-None-Match": '"1"'})))
    await until_async(lambda: _is(waiting("long-poll"), polls + 1), "the long-poll to be counted")
    async with client.get("/api/v1/jobs/held/stream", headers=headers(owner_key)) as stream:
        await stream.content.readuntil(b"\n\n")  # the retry line: the stream is open
        await until_async(lambda: _is(waiting("stream"), streams + 1), "the stream to be counted")
        await append(client, owner_key, "held", [{"type": "started"}])
        assert (await held).status == 200
        await until_async(lambda: _is(waiting("long-poll"), polls), "the long-poll to be let go")
    await until_async(lambda: _is(waiting("stream"), streams), "the stream to be let go")


async def _is(reading: Awaitable[float], expected: float) -> bool:
    return await reading == expected


@pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
async def test_metrics_can_be_turned_off(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> None:
    """`--no-metrics`: no /metrics route (404), yet request ids are still echoed."""
    await store.close()
    client = await aiohttp_client(create_app(Settings(metrics=False), store=store))
    response = await client.get("/metrics", headers={"X-Request-ID": "off-1"})
    assert response.status == 404
    assert response.headers["X-Request-ID"] == "off-1"


@pytest.mark.parametrize("store_kind", ["memory"], indirect=True)
async def test_the_reaper_counts_each_job_it_ends_by_reason(client: TestClient) -> None:
    """`count_reaped` (the reaper's hook) moves its reason's series; an unknown one is `other`."""
    before = await scrape(client)
    count_reaped("worker_lost")
    count_reaped("timed_out")
    count_reaped("timed_out")
    count_reaped("a reason nobody planned")
    after = await scrape(client)
    moved = {
        reason: value(after, "jobtracker_jobs_reaped_total", reason=reason)
        - value(before, "jobtracker_jobs_reaped_total", reason=reason)
        for reason in ("worker_lost", "timed_out", "cancelled", "other")
    }
    assert moved == {"worker_lost": 1, "timed_out": 2, "cancelled": 0, "other": 1}


async def test_redaction_masks_keys_hashes_webhook_secrets_and_url_passwords(
    store: Store,
) -> None:
    """What a log line would leak is masked wherever it sits in the line."""
    issued = await issue_key(store, "leaky")
    line = (f"key={issued.secret} hash {hash_secret(issued.secret)} secret whsec_AbC+/= "
            "url postgresql://jobs:hunter2@db:5432/jobs")
    shown = redact(line)
    for secret in (issued.secret, hash_secret(issued.secret), "whsec_AbC", "hunter2"):
        assert secret not in shown
    assert "postgresql://jobs:***@db:5432/jobs" in shown
