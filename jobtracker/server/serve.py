"""Running the HTTP API: one process, or several worker processes sharing one port.

With `workers > 1` this process migrates the store, then starts the workers and waits; each worker
runs the whole app and binds the port with SO_REUSEPORT, so the kernel spreads connections over
them. Every worker opens its own store: nothing is shared in memory, which is why `memory://`
cannot have more than one. SIGTERM or SIGINT to this process stops them all (each finishes the
requests it has); a worker that dies on its own brings the others down too, and the exit code
says so.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import attrs

from jobtracker.domain.errors import ConfigError
from jobtracker.server.limits import AcceptErrorThrottle, raise_open_files_limit
from jobtracker.server.settings import Settings
from jobtracker.store.url import parse_store_url

#: How long workers get to finish their requests when asked to stop.
STOP_GRACE_SECONDS = 30.0
#: After an early error answer, how long the rest of a request body is read and dropped.
LINGER_SECONDS = 2.0

log = logging.getLogger(__name__)


@attrs.frozen
class ServeOptions:
    """Where to listen, how many processes, and whether to log every request."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    #: Off by default: a log line per request costs about a sixth of a cached GET's time.
    access_log: bool = False
    #: Seconds a connection gets to send a whole request head (and an idle keep-alive
    #: connection stays open): trickling clients (slowloris) are closed after it.
    header_timeout: float = 10.0


def check_options(settings: Settings, options: ServeOptions) -> None:
    """Refuse combinations that cannot work, before anything starts."""
    if options.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if options.header_timeout <= 0 or settings.body_timeout <= 0:
        raise ConfigError("--header-timeout and --body-timeout must be more than 0 seconds")
    if options.workers == 1:
        return
    if parse_store_url(settings.store_url).kind == "memory":
        raise ConfigError("memory:// lives in one process; use a SQLite or PostgreSQL store "
                          "with --workers")
    if options.port == 0:
        raise ConfigError("--workers needs a fixed --port: port 0 would give each its own")


def run_server(settings: Settings, options: ServeOptions, *, reuse_port: bool = False) -> None:
    """Run one server process until SIGINT or SIGTERM."""
    from aiohttp import web

    from jobtracker.server.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    prefix = f"worker {os.getpid()}: " if reuse_port else ""
    log.info("%sopen files limit: %s", prefix, raise_open_files_limit() or "unknown")
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(AcceptErrorThrottle())
    web.run_app(
        create_app(settings),
        host=options.host,
        port=options.port,
        reuse_port=reuse_port or None,
        access_log=logging.getLogger("aiohttp.access") if options.access_log else None,
        print=lambda msg: print(prefix + msg, flush=True),
        loop=loop,
        # aiohttp closes a connection that has not sent a whole request this long after it
        # opened or after its last answer: our header read timeout, and the idle keep-alive one.
        keepalive_timeout=options.header_timeout,
        # After an early answer (a 408, a 413) read what is left of the body this long at most.
        lingering_time=LINGER_SECONDS,
    )


def serve(settings: Settings, options: ServeOptions) -> int:
    """Serve with `options.workers` processes; return the exit code."""
    check_options(settings, options)
    if options.workers == 1:
        run_server(settings, options)
        return 0
    return _run_workers(settings, options)


def _worker_main(settings: Settings, options: ServeOptions) -> None:
    # A process group of its own: a terminal's Ctrl-C reaches the parent alone, which then stops
    # each worker once (a second signal would interrupt aiohttp's graceful shutdown).
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    run_server(settings, options, reuse_port=True)


class _Stop(Exception):
    """Raised in the parent by SIGTERM or SIGINT, to leave its wait."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _migrate(settings: Settings) -> None:
    """Bring the schema up to date once, so workers do not all race to do it."""
    from jobtracker.store import make_store

    async def open_and_close() -> None:
        store = make_store(settings.store_url)
        await store.open()
        await store.close()

    asyncio.run(open_and_close())


def _run_workers(settings: Settings, options: ServeOptions) -> int:
    _migrate(settings)
    # spawn: each worker starts from a clean interpreter, on every platform.
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(settings, options), name=f"jobtracker-{n}")
        for n in range(1, options.workers + 1)
    ]
    # Both signals, explicitly: a shell starts background jobs with SIGINT ignored.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for worker in workers:
            worker.start()
        print(f"jobtracker: {options.workers} workers on http://{options.host}:{options.port}",
              flush=True)
        wait([worker.sentinel for worker in workers])
        return 1  # a worker exited without being asked to
    except _Stop:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(workers)


def _stop_all(workers: Sequence[BaseProcess]) -> None:
    """Ask every live worker to stop, wait for it, then kill the ones that would not."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    for worker in workers:
        if worker.pid is not None:
            worker.join(STOP_GRACE_SECONDS)
        if worker.is_alive():
            worker.kill()
            worker.join()
