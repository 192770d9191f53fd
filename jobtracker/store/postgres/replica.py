"""A read-only view of a PostgreSQL standby: the store's job read, answered by the standby.

A standby fed by streaming replication holds the primary's tables as they were a moment ago (the
replication lag). It takes no writes, no migrations and no LISTEN, so this view only reads: job
rows through a `BatchReader` of its own, as the primary's store does (one query for every GET
waiting), and row errors from a pool. Whether what it read is fresh enough is its caller's
question (`server/replica.py`).
"""

from __future__ import annotations

import functools
import logging

import asyncpg

from jobtracker.domain.errors import StoreUnavailable
from jobtracker.store.base import JobView
from jobtracker.store.postgres.batch_read import BatchReader, connect_reader
from jobtracker.store.postgres.driver import (
    COMMAND_TIMEOUT,
    CONNECT_TIMEOUT,
    DEFAULT_POOL_SIZE,
    driver_errors,
    keep_session,
    pool_size_from,
    redacted,
    with_timeouts,
)
from jobtracker.store.postgres.inventory import SWAPS_SINCE
from jobtracker.store.postgres.reading import read_job

log = logging.getLogger(__name__)


class PostgresReplica:
    """Reads jobs from a standby at `url` (`?pool_size=N` as for the store)."""

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        without_size, from_url = pool_size_from(url)
        self.url = with_timeouts(without_size)
        self._pool_size = pool_size or from_url or DEFAULT_POOL_SIZE
        self._pool: asyncpg.Pool | None = None
        self._reader: BatchReader | None = None
        #: Whether the last read failed (so a failure is logged once, not once per GET).
        self.failing = False

    async def open(self) -> None:
        """Make the pool; it connects on first use, so a standby that is down does not stop the
        server from starting (its GETs go to the primary until the standby answers)."""
        async with driver_errors(f"connecting to the replica {redacted(self.url)}"):
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=0,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                reset=keep_session,
            )
        # Its lane connects on the first GET, as the pool does: a standby down at start-up
        # stops nothing.
        self._reader = BatchReader(functools.partial(connect_reader, self.url))

    async def close(self) -> None:
        """Close the reader and the pool; closing twice is harmless."""
        pool, self._pool = self._pool, None
        reader, self._reader = self._reader, None
        async with driver_errors("closing the replica"):
            if reader is not None:
                await reader.close()
            if pool is not None:
                await pool.close()

    def note_failure(self, detail: str) -> None:
        """The standby did not answer; say so once, not once per GET."""
        if not self.failing:
            self.failing = True
            log.warning("the read replica does not answer, GETs read the primary: %s", detail)

    def note_success(self) -> None:
        """The standby answered; say so if it had stopped."""
        if self.failing:
            self.failing = False
            log.warning("the read replica answers again")

    async def get_job(self, job_id: str, errors_limit: int) -> JobView | None:
        """The job's view as the standby has replayed it so far (None: not there yet, or never)."""
        if self._pool is None or self._reader is None:
            raise StoreUnavailable("The PostgreSQL replica is not open")
        return await read_job(self._reader, self._pool, job_id, errors_limit)

    async def swaps_since(self, after_seq: int, limit: int = 1000) -> list[tuple[int, str | None]]:
        """`Store.swaps_since` as the standby has replayed it so far: a swap seen here comes with
        the rows it repaired (one transaction, replayed whole)."""
        if self._pool is None:
            raise StoreUnavailable("The PostgreSQL replica is not open")
        async with driver_errors("reading replay swaps from the replica"):
            rows = await self._pool.fetch(SWAPS_SINCE, after_seq, limit)
        return [(int(seq), job_id) for seq, job_id in rows]
