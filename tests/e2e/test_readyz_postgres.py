"""`/readyz` follows PostgreSQL: 503 while the database is down, 200 once it is back. Runs on a
private cluster (initdb/pg_ctl as the `postgres` OS user), never on the shared server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobtracker.server.webhooks.running import opened_store
from tests.conditions import wait_until
from tests.e2e.serving import http_get, seed, serving, stop
from tests.pg_cluster import PrivateCluster

#: `/readyz` waits 2 s for the store at most; an answer must never take much longer.
PROMPT = 5.0


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A private cluster, started; destroyed after the test."""
    private = PrivateCluster()
    private.start()
    yield private
    private.destroy()


def readiness(base: str) -> tuple[int, dict[str, str]]:
    """The status and body of `/readyz`, which must answer promptly whatever the store does."""
    asked = time.monotonic()
    status, body, _ = http_get(f"{base}/readyz")
    assert time.monotonic() - asked < PROMPT
    return status, orjson.loads(body)


def store_errors(base: str) -> float:
    text = http_get(f"{base}/metrics")[1].decode()
    return next(sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == "jobtracker_store_errors_total")


def test_readyz_is_503_while_postgresql_is_down_and_200_once_it_is_back(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    """Stop the database: /readyz turns 503 with a detail, a GET is 503 and counted as a store
    error, its request id on every log line it caused; start it again: /readyz is 200."""
    key = seed(cluster.url, "job-1")
    log = tmp_path / "serve.log"
    with serving(cluster.url, log, "--access-log", "--log-format", "json") as (server, base):
        assert readiness(base) == (200, {"status": "ready"})
        errors_before = store_errors(base)
        cluster.stop("fast")
        wait_until(lambda: readiness(base)[0] == 503, "/readyz to notice the database is down")
        status, body = readiness(base)
        assert status == 503
        assert body["detail"]
        failed = http_get(f"{base}/api/v1/jobs/job-1",
                          {"X-API-Key": key, "X-Request-ID": "while-down-1"})
        assert failed[0] == 503
        assert store_errors(base) > errors_before
        cluster.start()
        wait_until(lambda: readiness(base)[0] == 200, "/readyz to notice the database is back")
        assert http_get(f"{base}/api/v1/jobs/job-1", {"X-API-Key": key})[0] == 200
        assert stop(server)[0] == 0
    lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.strip()]
    tagged = [line for line in lines if line.get("request_id") == "while-down-1"]
    assert {line["logger"] for line in tagged} >= {"jobtracker.access", "jobtracker.server.errors"}
    assert all(line["level"] in ("INFO", "WARNING") for line in tagged)


def test_the_webhook_process_waits_for_a_database_that_is_down_when_it_starts(
    cluster: PrivateCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """A dispatcher (`serve`'s child, `webhooks run`) that starts while PostgreSQL is down keeps
    trying and opens the store once it is back, instead of dying with a traceback."""
    seed(cluster.url)  # migrated while up
    cluster.stop("fast")

    async def down_then_up() -> list[str]:
        opening = asyncio.create_task(opened_store(cluster.url))
        await asyncio.sleep(2.5)
        assert not opening.done()
        assert "does not answer" in caplog.text
        cluster.start()
        store = await asyncio.wait_for(opening, 30)
        try:
            return await store.missing_migrations()
        finally:
            await store.close()

    assert asyncio.run(down_then_up()) == []
