"""The SQLite store's side of replay (`jobtracker.store.rebuild.Rebuildable`).

Scans run on the reader thread; every write (and the swap with its catch-up) on the writer
thread, so replay never races an append for the writer connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from jobtracker.store.base import JobView
from jobtracker.store.rebuild import Comparison, LogEntry, ProjectionRows, TailFolder
from jobtracker.store.sqlite import rebuild as sqlite_rebuild
from jobtracker.store.sqlite.log import SqliteLog

T = TypeVar("T")


class ReplaySide:
    """`Rebuildable`'s methods for `SqliteStore`, which supplies `_write` and `_bulk_read`."""

    async def _write(self, call: Callable[[SqliteLog], T]) -> T:
        raise NotImplementedError  # the store's own

    async def _bulk_read(self, call: Callable[[SqliteLog], T]) -> T:
        raise NotImplementedError  # the store's own

    async def scan_log(
        self,
        after_position: int,
        limit: int,
        *,
        job_id: str | None = None,
        after_version: int = 0,
        upto: int | None = None,
    ) -> list[LogEntry]:
        """See `Rebuildable.scan_log`."""
        return await self._bulk_read(
            lambda log: sqlite_rebuild.scan_log(
                log.conn, after_position, limit, job_id, after_version, upto
            )
        )

    async def reset_area(self, area: str) -> None:
        """See `Rebuildable.reset_area`."""
        await self._write(lambda log: sqlite_rebuild.reset_area(log.conn, area))

    async def write_area(self, area: str, rows: ProjectionRows) -> None:
        """See `Rebuildable.write_area`."""
        await self._write(lambda log: sqlite_rebuild.write_area(log.conn, area, rows))

    async def swap_in(
        self,
        area: str,
        fold_tail: TailFolder,
        *,
        after_position: int,
        after_version: int = 0,
        job_id: str | None = None,
    ) -> int:
        """See `Rebuildable.swap_in`."""
        return await self._write(
            lambda log: sqlite_rebuild.swap_in(
                log.conn, area, fold_tail, after_position, after_version, job_id
            )
        )

    async def compare_area(
        self,
        area: str,
        fold_tail: TailFolder,
        *,
        after_position: int,
        after_version: int = 0,
        job_id: str | None = None,
        limit: int = 20,
    ) -> Comparison:
        """See `Rebuildable.compare_area`."""
        return await self._write(
            lambda log: sqlite_rebuild.compare_area(
                log.conn, area, fold_tail, after_position, after_version, job_id, limit
            )
        )

    async def area_view(self, area: str, job_id: str, errors_limit: int) -> JobView | None:
        """See `Rebuildable.area_view`."""
        return await self._bulk_read(
            lambda log: sqlite_rebuild.area_view(log.conn, area, job_id, errors_limit)
        )

    async def drop_area(self, area: str) -> None:
        """See `Rebuildable.drop_area`."""
        await self._write(lambda log: sqlite_rebuild.drop_area(log.conn, area))
