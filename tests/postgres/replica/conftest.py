"""The replica tests' clusters: a primary and its streaming standby, one pair per test session.

Never the shared server: `scripts/pg_replica.py` makes both with the PostgreSQL binaries. Without
them the tests are skipped with the reason, and failed under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

import attrs
import pytest
from aiohttp.test_utils import TestClient

from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store.keys import issue_key
from jobtracker.store.postgres import PostgresStore
from scripts.pg_replica import ReplicaPair, missing_binaries
from tests.pg_database import unique_name


@pytest.fixture(scope="session")
def replica_pair() -> Iterator[ReplicaPair]:
    """A primary and its standby, streaming, for the whole session; removed after it."""
    reason = missing_binaries()
    if reason is not None:
        message = f"a streaming replica needs PostgreSQL's server binaries: {reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with ReplicaPair() as pair:
        yield pair


@attrs.frozen
class Replicated:
    """One test's schema, seen through the primary and through the standby."""

    pair: ReplicaPair
    primary_url: str
    standby_url: str

    @contextmanager
    def replay_paused(self) -> Iterator[None]:
        """The standby applies nothing the primary writes inside the block (it streams it still)."""
        self.pair.sql(self.pair.standby_url(), "SELECT pg_wal_replay_pause()")
        try:
            yield
        finally:
            self.pair.sql(self.pair.standby_url(), "SELECT pg_wal_replay_resume()")


@pytest.fixture
def replicated(replica_pair: ReplicaPair) -> Iterator[Replicated]:
    """An empty schema of this test's own on the primary, with its URL there and on the standby."""
    schema = unique_name("r")
    replica_pair.sql(replica_pair.primary_url(), f'CREATE SCHEMA "{schema}"')
    query = f"?search_path={schema}"
    yield Replicated(replica_pair, replica_pair.primary_url() + query,
                     replica_pair.standby_url() + query)
    replica_pair.sql(replica_pair.primary_url(), f'DROP SCHEMA "{schema}" CASCADE')


@attrs.frozen
class ReplicaServer:
    """A test client of an app that reads GETs from the standby, and an owner key of its store."""

    client: TestClient
    key: str

    @property
    def headers(self) -> dict[str, str]:
        """The owner's key header."""
        return {"X-API-Key": self.key}


@pytest.fixture
async def replica_server(
    aiohttp_client: Callable[..., Awaitable[TestClient]], replicated: Replicated
) -> ReplicaServer:
    """`serve --read-url` in the test's schema: writes to the primary, job GETs from the standby."""
    settings = Settings(store_url=replicated.primary_url, read_url=replicated.standby_url,
                        webhooks=False)
    client = await aiohttp_client(create_app(settings))
    store = PostgresStore(replicated.primary_url, pool_size=1)
    await store.open()
    try:
        issued = await issue_key(store, "owner")
    finally:
        await store.close()
    return ReplicaServer(client, issued.secret)
