"""Databases as the version before worker-key bindings left them, keys stored its way."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from jobtracker.store.keys import PREFIX, hash_secret
from jobtracker.store.migrate import migrations

#: The first migration of each store that knows bindings; an old database has only those before.
FIRST_WITH_BINDINGS = {"sqlite": "0003", "postgres": "0004"}

OWNER_SECRET = PREFIX + "o" * 43
WORKER_SECRET = PREFIX + "w" * 43
#: (key id, scope, secret): an owner key and a worker key, as the old `keys create` made them.
OLD_KEYS = (("key_oldowner", "owner", OWNER_SECRET), ("key_oldworker", "worker", WORKER_SECRET))

_CREATED_AT = "2026-11-01T00:00:00.000000Z"


def _old_migrations(store: str) -> list[tuple[str, str]]:
    cutoff = FIRST_WITH_BINDINGS[store]
    return [(m.name, m.sql) for m in migrations(store) if m.name < cutoff]


def old_sqlite_database(path: Path, keys: Sequence[tuple[str, str, str]] = OLD_KEYS) -> None:
    """A SQLite file migrated up to before bindings, holding `keys` inserted the old way."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
        for name, sql in _old_migrations("sqlite"):
            conn.executescript(
                f"BEGIN; INSERT INTO schema_migrations VALUES ('{name}', '{_CREATED_AT}');"
                f"{sql}\n;COMMIT;"
            )
        for key_id, scope, secret in keys:
            conn.execute(
                "INSERT INTO api_keys (key_id, name, scope, key_hash, created_at, revoked_at) "
                "VALUES (?, ?, ?, ?, ?, NULL)",
                (key_id, key_id, scope, hash_secret(secret), _CREATED_AT),
            )
    finally:
        conn.close()


async def old_postgres_database(url: str, keys: Sequence[tuple[str, str, str]] = OLD_KEYS) -> None:
    """A PostgreSQL schema migrated up to before bindings, holding `keys` inserted the old way."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations "
            "(name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        for name, sql in _old_migrations("postgres"):
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
        for key_id, scope, secret in keys:
            await conn.execute(
                "INSERT INTO api_keys (key_id, name, scope, key_hash, created_at, revoked_at) "
                "VALUES ($1, $2, $3, $4, $5, NULL)",
                key_id, key_id, scope, hash_secret(secret), _CREATED_AT,
            )
    finally:
        await conn.close()
