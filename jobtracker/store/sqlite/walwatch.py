"""Has any process committed to this SQLite database? Read from SQLite's own wal-index mapping.

In WAL mode every commit rewrites the wal-index header at the start of the database's `-shm` file:
two identical 48-byte copies (transaction counter, last frame, salts, checksums), written one after
the other (https://www.sqlite.org/walformat.html, "The WAL-Index Header"). SQLite maps that file
into every process that has the database open; we read the header from *its* mapping, through
`/proc/self/mem`, with one `pread` (about 1 us), where `PRAGMA data_version` starts a read
transaction (locks and a `stat`, about 3 us idle and far more when processes contend).

We never open a descriptor on the `-shm` file (or the database, or its WAL). POSIX drops every
`fcntl` lock a process holds on a file when *any* of its descriptors on that file is closed: an
earlier version mapped `-shm` through a descriptor of its own and closed it, which silently
released SQLite's lock on the shared memory. The next process to open the database then believed
itself alone, truncated and rebuilt `-shm`, and the server died of SIGBUS on its next read of the
mapping. `/proc/self/mem` is another file: closing it releases nothing of SQLite's.

Each look then reads the header straight from that mapping, as SQLite's own code does on every
transaction (about 0.3 us against 1.25 us for a `pread`, on every GET). The address is checked
once through `/proc/self/mem` first (a bad address is an error there, not a crash). What keeps
the read safe is what keeps SQLite's: region 0 of the wal-index stays mapped while any connection
of this process has the database open (SQLite maps further regions beside it, never moves it),
and no process truncates `-shm` while we hold SQLite's shared-memory lock. So the store stops
the watch before it closes its last connection (`SqliteStore.close`), on the same thread.

Where this cannot work (not Linux, no mapping found, memory not readable) `open` returns None and
the store asks `PRAGMA data_version` instead. The answer errs one way only: a header caught
half-written (the copies differ), or unreadable, counts as a change.
"""

from __future__ import annotations

import ctypes
import os

#: Both copies of the wal-index header.
HEADER_BYTES = 96
HALF = HEADER_BYTES // 2
MAPS = "/proc/self/maps"
MEMORY = "/proc/self/mem"


def sqlite_mapping(shm_path: str, inode: int, maps: str = MAPS) -> int | None:
    """The address where this process maps the start of `shm_path` (inode `inode`), or None.

    SQLite maps the wal-index in regions; the first, at file offset 0, holds the header and stays
    mapped while any connection of this process has the database open.
    """
    try:
        with open(maps, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                fields = line.rstrip("\n").split(maxsplit=5)
                if len(fields) == 6 and _is_start_of(fields, shm_path, inode):
                    return int(fields[0].split("-")[0], 16)
    except OSError:
        return None
    return None


def _is_start_of(fields: list[str], shm_path: str, inode: int) -> bool:
    _address, perms, offset, _device, node, path = fields
    return path == shm_path and node == str(inode) and int(offset, 16) == 0 and "r" in perms


def readable_at(address: int, memory_file: str = MEMORY) -> bool:
    """Whether this process can read the header at `address` (an unmapped address is an error
    through `/proc/self/mem`, where reading it directly would crash)."""
    try:
        memory = os.open(memory_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return len(os.pread(memory, HEADER_BYTES, address)) == HEADER_BYTES
    except OSError:
        return False
    finally:
        os.close(memory)


class WalWatch:
    """The wal-index header of one open WAL database, read where SQLite maps it."""

    def __init__(self, address: int) -> None:
        #: SQLite's mapping of both copies of the header; None once closed.
        self._mapped: ctypes.Array[ctypes.c_char] | None = (
            ctypes.c_char * HEADER_BYTES
        ).from_address(address)

    @classmethod
    def open(cls, db_path: str) -> WalWatch | None:
        """Find SQLite's mapping of `<db_path>-shm`; None when there is none to read.

        Call it only once a connection of this store has read the database (so SQLite has mapped
        the wal-index) and close it before that connection closes (SQLite unmaps it then).
        """
        shm = os.path.realpath(f"{db_path}-shm")
        try:
            inode = os.stat(shm).st_ino
        except OSError:
            return None
        address = sqlite_mapping(shm, inode)
        if address is None or not readable_at(address):
            return None
        return cls(address)

    def header(self) -> bytes | None:
        """The header as it stands, or None while a commit is writing it (the two copies differ)
        or once the watch is closed."""
        mapped = self._mapped
        if mapped is None:
            return None
        both = mapped.raw
        return both if both[:HALF] == both[HALF:] else None

    def close(self) -> None:
        """Stop reading the mapping (we hold no descriptor on the database's files)."""
        self._mapped = None
