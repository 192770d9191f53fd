"""Shared fixtures: every store the contract suite runs against, and a live test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.domain.events import Created
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import MemoryStore, SqliteStore, Store, make_store
from jobtracker.store.keys import IssuedKey, issue_key
from tests.pg_database import (  # noqa: F401 - postgres_database is a fixture
    drop_schema,
    new_schema_url,
    postgres_database,
    run_database,
)

STORE_KINDS = ["memory", "sqlite", "postgres"]


def make_test_store(kind: str, tmp_path: Path, postgres_url: str | None = None) -> Store:
    """A closed store of `kind` that lives only for this test."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(str(tmp_path / "jobs.db"))
    if kind == "postgres":
        return make_store(postgres_url or new_schema_url(run_database()))
    raise ValueError(kind)


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Each store kind in turn: the contract suite runs once per store."""
    kind: str = request.param
    return kind


@pytest.fixture
def postgres_url(store_kind: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """For the postgres kind, a fresh schema in this run's database (None for other kinds)."""
    if store_kind != "postgres":
        yield None
        return
    url = new_schema_url(request.getfixturevalue("postgres_database"))
    yield url
    drop_schema(url)


@pytest.fixture
async def store(
    store_kind: str, tmp_path: Path, postgres_url: str | None
) -> AsyncIterator[Store]:
    """An open, empty store of each kind."""
    opened = make_test_store(store_kind, tmp_path, postgres_url)
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def make_job(store: Store) -> Callable[..., Awaitable[str]]:
    """Create a job owned by `owner` (default 'key_owner') and return its id."""

    async def create(
        job_id: str = "job-1", owner: str = "key_owner", total: int | None = None
    ) -> str:
        await store.create_job(job_id, Created(owner=owner, total=total))
        return job_id

    return create


@pytest.fixture
async def client(
    aiohttp_client: Callable[..., Awaitable[TestClient]], store: Store
) -> TestClient:
    """A test client for an app on the per-kind store (the app opens and closes it)."""
    await store.close()  # the app owns its lifecycle from here on
    return await aiohttp_client(create_app(Settings(), store=store))


@pytest.fixture
async def owner_key(client: TestClient, store: Store) -> IssuedKey:
    """A fresh owner-scope key on the client's store."""
    return await issue_key(store, "owner")


@pytest.fixture
async def other_key(client: TestClient, store: Store) -> IssuedKey:
    """A second owner-scope key: someone else."""
    return await issue_key(store, "someone else")
