"""Pluggable stores behind one interface; `make_store` picks one from a URL."""

from __future__ import annotations

from jobtracker.domain.errors import ConfigError
from jobtracker.store.base import ApiKey, AppendResult, JobView, Store
from jobtracker.store.memory import MemoryStore
from jobtracker.store.sqlite import SqliteStore
from jobtracker.store.url import parse_store_url

__all__ = ["ApiKey", "AppendResult", "JobView", "MemoryStore", "SqliteStore", "Store", "make_store"]


def make_store(url: str, *, group_commit: bool = True) -> Store:
    """A closed store for `url`; call `open()` before use.

    `group_commit=False` makes every append commit alone (the benchmarks' reference).
    """
    parsed = parse_store_url(url)
    if parsed.kind == "sqlite":
        return SqliteStore(parsed.location, group_commit=group_commit)
    if parsed.kind == "memory":
        return MemoryStore()
    # Imported here so SQLite-only users never load (or need) the PostgreSQL driver.
    try:
        import asyncpg  # noqa: F401 - only asked whether it is installed
    except ImportError:
        raise ConfigError(
            "a postgresql:// store needs the asyncpg driver: pip install 'jobtracker[postgres]'"
        ) from None
    from jobtracker.store.postgres import PostgresStore

    return PostgresStore(parsed.location, group_commit=group_commit)
