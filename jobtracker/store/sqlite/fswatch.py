"""Linux inotify through ctypes: learn that another process wrote a file without polling it.

A SQLite commit by any process writes the `-wal` file beside the database; watching the folder for
writes to it wakes the change feed at once and costs nothing while nothing happens. Elsewhere (no
inotify) `watch_folder` returns None and the caller keeps polling.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

IN_MODIFY = 0x002
IN_CREATE = 0x100
IN_MOVED_TO = 0x080
IN_Q_OVERFLOW = 0x4000
_HEADER = struct.Struct("iIII")


class FolderWatch:
    """An inotify descriptor on one folder, read by the event loop."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = fd
        self._loop = loop

    def close(self) -> None:
        """Stop watching."""
        self._loop.remove_reader(self._fd)
        os.close(self._fd)


def _names(buffer: bytes) -> set[str]:
    """The file names in a buffer of inotify events ('*' on overflow: anything may have changed)."""
    names: set[str] = set()
    offset = 0
    while offset + _HEADER.size <= len(buffer):
        _, mask, _, length = _HEADER.unpack_from(buffer, offset)
        start = offset + _HEADER.size
        names.add("*" if mask & IN_Q_OVERFLOW else buffer[start : start + length].rstrip(b"\0")
                  .decode(errors="replace"))
        offset = start + length
    return names


def watch_folder(
    folder: str, names: set[str], wake: Callable[[], None]
) -> FolderWatch | None:
    """Call `wake` on the running loop whenever a file in `names` inside `folder` is written."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        return None
    mask = IN_MODIFY | IN_CREATE | IN_MOVED_TO
    if libc.inotify_add_watch(fd, os.fsencode(Path(folder).resolve()), mask) < 0:
        os.close(fd)
        return None

    def readable() -> None:
        try:
            seen = _names(os.read(fd, 64 * 1024))
        except BlockingIOError:
            return
        if "*" in seen or seen & names:
            wake()

    loop = asyncio.get_running_loop()
    loop.add_reader(fd, readable)
    return FolderWatch(fd, loop)
