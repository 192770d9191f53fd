"""Running the HTTP API: one process, or several worker processes sharing one port.

With `workers > 1` this process migrates the store, then starts the workers and waits; each worker
runs the whole app and binds the port with SO_REUSEPORT, so the kernel spreads connections over
them. Every worker opens its own store: nothing is shared in memory, which is why `memory://`
cannot have more than one. SIGTERM or SIGINT to this process stops them all (each finishes the
requests it has); a worker that dies on its own brings the others down too, and the exit code
says so. The workers keep their metrics in files in a folder this process makes for them (see
`metrics`), so a scrape served by any of them counts all of them.

Stopping (SIGTERM or SIGINT; aiohttp's `run_app` handles both): the listening socket closes at
once and idle keep-alive connections with it; held `?wait=` requests are answered 304 and event
streams end with a comment asking the client to reconnect (the change feed's `stop` wakes them);
requests under way, appends included, get `handler_grace(--shutdown-timeout)` to finish and be
answered, then are cancelled; the store closes after them, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from types import FrameType

import attrs

from jobtracker.domain.errors import ConfigError
from jobtracker.domain.events import HEARTBEAT_TIMEOUT_RANGE
from jobtracker.server import access, logs
from jobtracker.server.limits import AcceptErrorThrottle, raise_open_files_limit
from jobtracker.server.listening import bind_error, check_port_free, metrics_site
from jobtracker.server.replica import check_read_url
from jobtracker.server.settings import Settings
from jobtracker.store.url import parse_store_url

#: How long past `--shutdown-timeout` the parent waits for a worker before it kills it.
STOP_MARGIN_SECONDS = 5.0
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
    #: `text` or `json` (one object per line) for every log line, access log included.
    log_format: str = "text"
    #: Seconds from SIGTERM or SIGINT to exit: requests under way finish within it.
    shutdown_timeout: float = 10.0
    #: Proxies whose `X-Forwarded-For` the access log believes: addresses, networks or `*`.
    forwarded_allow_ips: str = "127.0.0.1"


def check_options(settings: Settings, options: ServeOptions) -> None:
    """Refuse combinations that cannot work, before anything starts."""
    if options.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if options.header_timeout <= 0 or settings.body_timeout <= 0:
        raise ConfigError("--header-timeout and --body-timeout must be more than 0 seconds")
    if options.shutdown_timeout <= 0:
        raise ConfigError("--shutdown-timeout must be more than 0 seconds")
    if options.log_format not in logs.LOG_FORMATS:
        raise ConfigError(f"--log-format must be one of {', '.join(logs.LOG_FORMATS)}")
    access.TrustedProxies.parse(options.forwarded_allow_ips)
    check_read_url(settings.store_url, settings.read_url)
    if settings.metrics_port is not None and not (
        0 < settings.metrics_port < 65536 and settings.metrics_port != options.port
    ):
        raise ConfigError("--metrics-port must be a port from 1 to 65535 other than --port")
    low, high = HEARTBEAT_TIMEOUT_RANGE
    if not low <= settings.heartbeat_timeout <= high:
        raise ConfigError(f"--heartbeat-timeout must be from {low} to {high} seconds")
    if settings.cancel_grace < 0:
        raise ConfigError("--cancel-grace must be 0 seconds or more")
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

    handler = logs.configure(options.log_format)
    prefix = f"worker {os.getpid()}: " if reuse_port else ""
    log.info("%sopen files limit: %s", prefix, raise_open_files_limit() or "unknown")
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(AcceptErrorThrottle())
    app = create_app(settings)
    if settings.metrics and settings.metrics_port is not None:
        app.cleanup_ctx.append(
            metrics_site(options.host, settings.metrics_port, reuse_port=reuse_port)
        )
    try:
        web.run_app(
            app,
            host=options.host,
            port=options.port,
            reuse_port=reuse_port or None,
            access_log=access.ACCESS_LOGGER if options.access_log else None,
            access_log_class=access.access_log_class(
                access.TrustedProxies.parse(options.forwarded_allow_ips), handler
            ),
            print=_announcer(prefix, options.log_format),
            loop=loop,
            shutdown_timeout=handler_grace(options.shutdown_timeout),
            # aiohttp closes a connection that has not sent a whole request this long after it
            # opened or after its last answer: our header read timeout, and the idle keep-alive one.
            keepalive_timeout=options.header_timeout,
            # After an early answer (a 408, a 413) read what is left of the body this long at most.
            lingering_time=LINGER_SECONDS,
        )
    except OSError as exc:
        error = bind_error(exc)
        if error is None:
            raise
        raise error from None


def handler_grace(shutdown_timeout: float) -> float:
    """How long requests under way may still run once asked to stop: the timeout less what
    closing the store may take (aiohttp rounds waits of 5 s and more up to a whole second)."""
    return shutdown_timeout - min(2.0, shutdown_timeout / 2)


def _announcer(prefix: str, log_format: str) -> Callable[[str], None]:
    """Where aiohttp's "Running on" goes: stdout, or a log line when every line must be JSON."""
    if log_format == "json":
        return lambda message: log.info("%s%s", prefix, " ".join(message.replace("=", " ").split()))
    return lambda message: print(prefix + message, flush=True)


def serve(settings: Settings, options: ServeOptions) -> int:
    """Serve with `options.workers` processes; return the exit code."""
    check_options(settings, options)
    check_port_free(options.host, options.port)
    if settings.metrics and settings.metrics_port is not None:
        check_port_free(options.host, settings.metrics_port)
    from jobtracker.server.webhooks.running import dispatcher_process

    # Webhooks are delivered by a process of their own beside the API's: their HTTP work never
    # takes the API's event loop (memory:// keeps them in its one process).
    with dispatcher_process(settings, options.log_format) as api_settings:
        if options.workers == 1:
            run_server(api_settings, options)
            return 0
        return _run_workers(api_settings, options)


def _worker_main(settings: Settings, options: ServeOptions) -> None:
    # A process group of its own: a terminal's Ctrl-C reaches the parent alone, which then stops
    # each worker once (a second signal would interrupt aiohttp's graceful shutdown).
    if hasattr(os, "setpgrp"):
        os.setpgrp()
    try:
        run_server(settings, options, reuse_port=True)
    except ConfigError as exc:  # one line, as from a single process; the parent sees code 2
        print(f"jobtracker: error: {exc.detail}", file=sys.stderr, flush=True)
        sys.exit(2)


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
    logs.configure(options.log_format)
    _migrate(settings)
    # spawn: each worker starts from a clean interpreter, on every platform.
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(settings, options), name=f"jobtracker-{n}")
        for n in range(1, options.workers + 1)
    ]
    # A fresh folder per run: values left by an earlier run would be counted again.
    metrics_dir = tempfile.mkdtemp(prefix="jobtracker-metrics-")
    # Both signals, explicitly: a shell starts background jobs with SIGINT ignored.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _start_all(workers, metrics_dir)
        plural = "s" if options.workers != 1 else ""
        _announcer("", options.log_format)(
            f"jobtracker: {options.workers} worker{plural} on http://{options.host}:{options.port}")
        wait([worker.sentinel for worker in workers])
        # A worker exited without being asked to: 2 if it could not start (its port was taken).
        return 2 if any(worker.exitcode == 2 for worker in workers) else 1
    except _Stop:
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_all(workers, options.shutdown_timeout + STOP_MARGIN_SECONDS)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _start_all(workers: Sequence[BaseProcess], metrics_dir: str) -> None:
    """Start the workers with `metrics_dir` as prometheus_client's multiprocess folder."""
    from jobtracker.server.metrics import metrics_folder

    with metrics_folder(metrics_dir):
        for worker in workers:
            worker.start()


def _stop_all(workers: Sequence[BaseProcess], grace: float) -> None:
    """Pass SIGTERM on to every live worker, wait `grace` s for them, then kill the rest."""
    for worker in workers:
        if worker.is_alive():
            worker.terminate()
    deadline = time.monotonic() + grace
    for worker in workers:
        if worker.pid is not None:
            worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.kill()
            worker.join()
