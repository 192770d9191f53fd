"""What a server process does for itself before it serves: descriptors, and quiet accept errors.

Every connection, every open stream and every held `?wait=` costs a file descriptor; a soft limit
of 1024 (the usual default) caps a server at about a thousand waiters, so we raise it to the hard
limit the system allows. When descriptors run out anyway, asyncio reports each failed `accept()`
through the loop's exception handler with a traceback, thousands a second while clients keep
connecting; we log that at most once a second, with the count of the ones we held back.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: The errors `accept()` fails with when the process or the system is out of descriptors/memory.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def raise_open_files_limit() -> int | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; the limit now in force."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, wanted, exc)
    return soft


class AcceptErrorThrottle:
    """A loop exception handler that reports out-of-descriptor accept failures once a second.

    Everything else goes to the loop's default handler unchanged.
    """

    def __init__(self, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last = -interval
        self.held_back = 0

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if _late_accept_retry(exc, context):
            log.debug("an accept retry ran after its listening socket closed (shutdown)")
            return
        if not isinstance(exc, OSError) or exc.errno not in OUT_OF_RESOURCES:
            loop.default_exception_handler(context)
            return
        now = self._clock()
        if now - self._last < self._interval:
            self.held_back += 1
            return
        held, self.held_back, self._last = self.held_back, 0, now
        log.error(
            "cannot accept connections: %s (%s); %d more like it in the last %.0f s. "
            "Raise the open files limit or lower the number of clients.",
            exc.strerror, context.get("message", "accept failed"), held, self._interval,
        )


def _late_accept_retry(exc: object, context: dict[str, Any]) -> bool:
    """Whether this is asyncio retrying `accept` a second after running out of descriptors, on
    a listening socket that a shutdown closed meanwhile: harmless, the server is stopping."""
    handle = context.get("handle")
    callback = getattr(handle, "_callback", None)  # asyncio's own name for the scheduled call
    return (
        isinstance(exc, ValueError)
        and str(exc).startswith("Invalid file descriptor")
        and getattr(callback, "__name__", "") == "_start_serving"
    )
