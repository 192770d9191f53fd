"""Key lookups kept in memory for the PostgreSQL store, dropped the moment a key changes.

A trigger announces every change to `api_keys` (NOTIFY on `jobtracker_keys`, migration 0002), so a
revocation made by any process on any host reaches every server's cache as soon as it commits.
Keys are cached only while the listening connection is up: a notification that cannot arrive
must not leave a revoked key usable, so without a listener every lookup goes to the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from jobtracker.store.base import ApiKey
from jobtracker.store.postgres.listen import AppendHints
from jobtracker.store.postgres.sql import KEYS_CHANNEL

#: Most keys remembered; only keys that exist are, so random guesses cannot fill memory.
LIMIT = 10_000


class KeyCache:
    """Remembered key lookups, valid while the listener is up and nothing was announced since."""

    def __init__(self, url: str, retry_interval: float) -> None:
        self._keys: dict[str, ApiKey] = {}
        self._generation = 0
        self._subscribers: list[Callable[[], None]] = []
        self._hints = AppendHints(url, retry_interval, channel=KEYS_CHANNEL)
        self._hints.subscribe(self.forget)

    @property
    def heard(self) -> bool:
        """Whether key changes are heard right now: what is remembered may be used."""
        return self._hints.listening

    def subscribe(self, forget: Callable[[], None]) -> None:
        """Call `forget` too whenever this cache forgets (another memory of keys, the server's)."""
        self._subscribers.append(forget)

    def forget(self) -> None:
        """A key changed (or the listener dropped): nothing remembered can be trusted."""
        self._generation += 1
        self._keys.clear()
        for forget in self._subscribers:
            forget()

    async def find(
        self, key_hash: str, lookup: Callable[[str], Awaitable[ApiKey | None]]
    ) -> ApiKey | None:
        """The key with this hash: from memory when safe, else from `lookup`."""
        if self.heard:
            key = self._keys.get(key_hash)
            if key is not None:
                return key
        generation = self._generation
        key = await lookup(key_hash)
        # A change announced while we were reading may concern this very key: keep nothing then.
        fresh = generation == self._generation and self.heard
        if key is not None and fresh and len(self._keys) < LIMIT:
            self._keys[key_hash] = key
        return key

    async def close(self) -> None:
        """Stop listening."""
        await self._hints.close()
