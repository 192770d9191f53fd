"""Schema migrations: numbered SQL files, each applied in one transaction with its record."""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
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


#: A migration's Python step (`migrate_sqlite`'s `steps`): inside a write transaction the caller
#: opened, move one batch of data; return how many rows it moved (0: nothing is left).
DataStep = Callable[[sqlite3.Connection], int]

#: The line of a migration's SQL where its data step runs. What is above it must be safe to run
#: again (it runs before every resumed attempt); what is below it runs after the last batch, in
#: the transaction that records the migration.
DATA_STEP_MARK = "-- jobtracker: data step"


def migrate_sqlite(
    conn: sqlite3.Connection, kind: str = "sqlite", steps: Mapping[str, DataStep] | None = None
) -> list[str]:
    """Apply what is missing (of the `kind` folder: the log's file, or `sqlite-webhooks`);
    return the names applied now. Re-running is a no-op.

    The record goes in first, inside the same transaction as the SQL: a second process migrating at
    the same moment fails on the record's primary key and rolls back instead of applying twice.
    A migration with a data step in `steps` (keyed by its name) moves its data in batches first,
    each a transaction of its own, so an interrupted one resumes where it stopped.
    """
    done: list[str] = []
    for migration in migrations(kind):
        if migration.name in _applied(conn):
            continue
        step = (steps or {}).get(migration.name)
        if step is None and DATA_STEP_MARK in migration.sql:
            # Without its step the SQL would drop data it was meant to move.
            raise ConfigError(f"migration {migration.name} needs its data step")
        try:
            if step is None:
                conn.executescript(f"BEGIN IMMEDIATE;\n{_RECORD.format(migration.name)}\n"
                                   f"{migration.sql}\n;COMMIT;")
            elif not _with_data_step(conn, migration, step):
                continue
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if migration.name in _applied(conn):
                continue  # another process applied it between our check and our write
            raise
        done.append(migration.name)
    return done


_RECORD = (
    "INSERT INTO schema_migrations (name, applied_at) "
    "VALUES ('{}', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));"
)


def _with_data_step(conn: sqlite3.Connection, migration: Migration, step: DataStep) -> bool:
    """Apply a migration with a data step; False if another process applied it meanwhile."""
    before, mark, after = migration.sql.partition(DATA_STEP_MARK)
    if not mark:
        raise ConfigError(f"migration {migration.name} has a data step but no {DATA_STEP_MARK!r}")
    conn.executescript(f"BEGIN IMMEDIATE;\n{before}\n;COMMIT;")
    while True:
        conn.execute("BEGIN IMMEDIATE")
        if migration.name in _applied(conn):  # another process finished it meanwhile
            conn.execute("ROLLBACK")
            return False
        moved = step(conn)
        if not moved:
            break  # the last transaction stays open: the rest and the record commit together
        conn.execute("COMMIT")
    conn.execute(_RECORD.format(migration.name))
    for statement in _statements(after):
        conn.execute(statement)
    conn.execute("COMMIT")
    return True


def _statements(sql: str) -> Iterator[str]:
    """The statements of a script one by one (`executescript` would commit the open transaction
    first); a trigger's body ends only at its END."""
    pending = ""
    for line in sql.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip():
                yield pending
            pending = ""
    if any(line.strip() and not line.lstrip().startswith("--") for line in pending.splitlines()):
        raise ConfigError(f"a migration ends inside a statement: {pending.strip()[:60]!r}")
