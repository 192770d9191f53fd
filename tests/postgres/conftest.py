"""Fixtures for the PostgreSQL-only tests: a fresh schema, and stores on it that clean up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from jobtracker.store.postgres import PostgresStore
from tests.pg_database import drop_schema, new_schema_url

OpenStore = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
def pg_url(postgres_database: str) -> Iterator[str]:
    """The URL of an empty schema in this run's test database."""
    url = new_schema_url(postgres_database)
    yield url
    drop_schema(url)


@pytest.fixture
async def open_store(pg_url: str) -> AsyncIterator[OpenStore]:
    """Open stores on the test schema (each like a separate process); all closed after."""
    opened: list[PostgresStore] = []

    async def open_one(**options: Any) -> PostgresStore:
        store = PostgresStore(pg_url, **{"pool_size": 4, **options})
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()
