"""Schema migrations: numbered SQL files, each applied in one transaction with its record."""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Iterable
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import attrs

from jobtracker.domain.errors import ConfigError

MIGRATION_NAME = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@attrs.frozen
class Migration:
    """One numbered SQL file."""

    name: str
    sql: str


def _migrations_root() -> Traversable:
    # An installed wheel carries them inside the package; a source checkout has them at the top.
    packaged = resources.files("jobtracker") / "_migrations"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "migrations"  # from jobtracker/store/
    if checkout.is_dir():
        return checkout
    raise ConfigError("jobtracker's migrations are missing from this installation")


def migrations(store: str) -> list[Migration]:
    """The migrations for one store kind ('sqlite', 'postgres'), in order."""
    folder = _migrations_root() / store
    found = [
        Migration(entry.name.removesuffix(".sql"), entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if MIGRATION_NAME.fullmatch(entry.name)
    ]
    return sorted(found, key=lambda m: m.name)


@functools.cache
def migration_names(store: str) -> tuple[str, ...]:
    """The names of one store kind's migrations, in order (read once per process)."""
    return tuple(migration.name for migration in migrations(store))


def missing_migrations(store: str, applied: Iterable[str]) -> list[str]:
    """The migrations of this version that a database which applied `applied` lacks."""
    done = set(applied)
    return [name for name in migration_names(store) if name not in done]


def _applied(conn: sqlite3.Connection) -> set[str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    return {name for (name,) in conn.execute("SELECT name FROM schema_migrations")}


def migrate_sqlite(conn: sqlite3.Connection, kind: str = "sqlite") -> list[str]:
    """Apply what is missing (of the `kind` folder: the log's file, or `sqlite-webhooks`);
    return the names applied now. Re-running is a no-op.

    The record goes in first, inside the same transaction as the SQL: a second process migrating at
    the same moment fails on the record's primary key and rolls back instead of applying twice.
    """
    done: list[str] = []
    for migration in migrations(kind):
        if migration.name in _applied(conn):
            continue
        script = (
            "BEGIN IMMEDIATE;\n"
            "INSERT INTO schema_migrations (name, applied_at) "
            f"VALUES ('{migration.name}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));\n"
            f"{migration.sql}\n;COMMIT;"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if migration.name in _applied(conn):
                continue  # another process applied it between our check and our write
            raise
        done.append(migration.name)
    return done
