"""SQLite's API keys and their bindings (migrations 0001 and 0003), for `SqliteLog`."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from jobtracker.store.base import ApiKey

# A key with its binding (migration 0003), in one read: the binding must not cost a second lookup.
_SELECT_KEY = (
    "SELECT key_id, name, scope, key_hash, created_at, revoked_at, all_owners, "
    "(SELECT group_concat(owner_key_id, ' ') FROM worker_key_owners AS bound "
    "WHERE bound.key_id = api_keys.key_id) FROM api_keys"
)


def _api_key(row: Sequence[Any]) -> ApiKey:
    key_id, name, scope, key_hash, created_at, revoked_at, all_owners, owners = row
    return ApiKey(
        key_id, name, scope, key_hash, created_at, revoked_at,
        all_owners=bool(all_owners), owners=(owners or "").split(),
    )


class KeyTable:
    """The key methods of `SqliteLog`, which supplies the connection, the clock and transactions."""

    conn: sqlite3.Connection
    _clock: Callable[[], str]

    def _immediate(self) -> AbstractContextManager[None]:
        raise NotImplementedError  # the log's own

    def add_key(self, key: ApiKey) -> None:
        """Store a key record and its binding."""
        with self._immediate():
            self.conn.execute(
                "INSERT INTO api_keys "
                "(key_id, name, scope, key_hash, created_at, revoked_at, all_owners) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key.key_id, key.name, key.scope, key.key_hash, key.created_at, key.revoked_at,
                 key.all_owners),
            )
            self.conn.executemany(
                "INSERT INTO worker_key_owners (key_id, owner_key_id) VALUES (?, ?)",
                [(key.key_id, owner) for owner in key.owners],
            )

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash."""
        row = self.conn.execute(f"{_SELECT_KEY} WHERE key_hash = ?", (key_hash,)).fetchone()
        return None if row is None else _api_key(row)

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id."""
        row = self.conn.execute(f"{_SELECT_KEY} WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else _api_key(row)

    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        rows = self.conn.execute(f"{_SELECT_KEY} ORDER BY created_at, key_id")
        return [_api_key(row) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        """Revoke a key; False when there is none with that id."""
        with self._immediate():
            self.conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (self._clock(), key_id),
            )
            found = self.conn.execute("SELECT 1 FROM api_keys WHERE key_id = ?", (key_id,))
            return found.fetchone() is not None
