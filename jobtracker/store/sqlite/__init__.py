"""The embedded default store: one SQLite file in WAL mode."""

from jobtracker.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
