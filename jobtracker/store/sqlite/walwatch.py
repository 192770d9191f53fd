"""Has any process committed to this SQLite database? Answered without a system call.

In WAL mode every commit rewrites the wal-index header at the start of the database's `-shm` file:
two identical 48-byte copies (transaction counter, last frame, salts, checksums), written one after
the other (https://www.sqlite.org/walformat.html, "The WAL-Index Header"). Reading those 96 bytes
through a read-only memory map costs well under a microsecond, where `PRAGMA data_version` starts
a read transaction: two `fcntl` locks and a `stat`, which on a busy machine made the key check the
largest part of a cached GET.

The answer errs one way only: a header caught half-written (the copies differ) counts as a change.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

#: Both copies of the wal-index header.
HEADER_BYTES = 96


class WalWatch:
    """The wal-index header of one open WAL database, mapped read-only."""

    def __init__(self, map_: mmap.mmap) -> None:
        self._map = map_

    @classmethod
    def open(cls, db_path: str) -> WalWatch | None:
        """Map `<db_path>-shm`; None when there is none to map (not WAL, or not opened yet).

        Open it only while a connection to the database is open: that connection keeps the file
        from being removed or reset under the map.
        """
        shm = Path(f"{db_path}-shm")
        try:
            fd = os.open(shm, os.O_RDONLY)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < HEADER_BYTES:
                return None
            return cls(mmap.mmap(fd, HEADER_BYTES, access=mmap.ACCESS_READ))
        finally:
            os.close(fd)  # the map keeps its own reference to the file

    def header(self) -> bytes | None:
        """The header as it stands, or None while a commit is writing it."""
        both = self._map[:HEADER_BYTES]
        half = HEADER_BYTES // 2
        return both if both[:half] == both[half:] else None

    def close(self) -> None:
        """Unmap."""
        self._map.close()
