"""The PostgreSQL store's side of replay (`jobtracker.store.rebuild.Rebuildable`).

The work is in `rebuild`; each call here runs on one pooled connection, inside the store's one
translation boundary (`driver.driver_errors`).
"""

from __future__ import annotations

from collections.abc import Sequence

from jobtracker.store.base import JobView
from jobtracker.store.postgres import rebuild as pg_rebuild
from jobtracker.store.postgres.driver import PoolSide
from jobtracker.store.rebuild import Comparison, LogEntry, ProjectionRows, TailFolder


class ReplaySide(PoolSide):
    """`Rebuildable`'s methods for `PostgresStore`, which supplies `_open_pool`."""

    async def scan_log(
        self,
        after_position: int,
        limit: int,
        *,
        job_id: str | None = None,
        after_version: int = 0,
        upto: int | None = None,
    ) -> Sequence[LogEntry]:
        """See `Rebuildable.scan_log`."""
        return await self._on_connection(
            "scanning the log",
            lambda conn: pg_rebuild.scan_log(conn, after_position, limit, job_id, after_version,
                                             upto),
        )

    async def reset_area(self, area: str) -> None:
        """See `Rebuildable.reset_area`."""
        await self._on_connection("making a scratch area", lambda c: pg_rebuild.reset_area(c, area))

    async def write_area(self, area: str, rows: ProjectionRows) -> None:
        """See `Rebuildable.write_area`."""
        await self._on_connection(
            "filling a scratch area", lambda conn: pg_rebuild.write_area(conn, area, rows)
        )

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
        return await self._on_connection(
            "swapping in the rebuilt projection",
            lambda conn: pg_rebuild.swap_in(
                conn, area, fold_tail, after_position, after_version, job_id
            ),
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
        return await self._on_connection(
            "comparing the rebuilt projection",
            lambda conn: pg_rebuild.compare_area(
                conn, area, fold_tail, after_position, after_version, job_id, limit
            ),
        )

    async def area_view(self, area: str, job_id: str, errors_limit: int) -> JobView | None:
        """See `Rebuildable.area_view`."""
        return await self._on_connection(
            "reading a scratch area",
            lambda conn: pg_rebuild.area_view(conn, area, job_id, errors_limit),
        )

    async def drop_area(self, area: str) -> None:
        """See `Rebuildable.drop_area`."""
        await self._on_connection(
            "dropping a scratch area", lambda c: pg_rebuild.drop_area(c, area)
        )
