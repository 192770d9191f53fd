"""Where the dispatcher runs: a process `serve` starts beside the API (`dispatcher_process`),
alone (`jobtracker webhooks run`), or inside the app (`create_app` with `Settings.webhooks`, as
tests and `memory://` do)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator

import attrs
from aiohttp import web

from jobtracker.domain.errors import StoreUnavailable
from jobtracker.server.common import SETTINGS, STORE
from jobtracker.server.metrics import DELIVERIES_DIR_ENV, count_delivery, metrics_folder
from jobtracker.server.settings import Settings
from jobtracker.server.webhooks.dispatcher import Dispatcher
from jobtracker.store import Store, make_store
from jobtracker.store.url import parse_store_url

log = logging.getLogger(__name__)

DISPATCHER = web.AppKey("jobtracker_webhook_dispatcher", Dispatcher)


async def webhooks_context(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: the dispatcher runs while the app does (after the store opened)."""
    settings = app[SETTINGS]
    if not settings.webhooks:
        yield
        return
    dispatcher = Dispatcher(
        app[STORE], settings,
        on_settled=(lambda s: count_delivery(s.verdict)) if settings.metrics else lambda s: None,
    )
    app[DISPATCHER] = dispatcher
    task = asyncio.create_task(dispatcher.run(), name="jobtracker-webhooks")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_alone(settings: Settings, *, parent: int | None = None) -> None:
    """Deliver webhooks without serving the API, until SIGINT or SIGTERM (or, with `parent`,
    until that process is gone: a `serve` killed with -9 must not leave its dispatcher behind)."""
    watch = asyncio.create_task(_orphaned(parent)) if parent is not None else None
    task = asyncio.create_task(_deliver(settings), name="jobtracker-webhooks")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        if watch is not None:
            watch.cancel()


#: Seconds between two tries to open a store that does not answer.
REOPEN_PAUSE = 1.0


async def _deliver(settings: Settings) -> None:
    store = await opened_store(settings.store_url)
    try:
        counting = (lambda s: count_delivery(s.verdict)) if settings.metrics else lambda s: None
        log.info("delivering webhooks from %s", store.__class__.__name__)
        await Dispatcher(store, settings, on_settled=counting).run()
    finally:
        await store.close()


async def opened_store(url: str) -> Store:
    """The store, once it answers: a database that is down when the dispatcher starts (or
    restarts) is waited for, as the API's requests wait for it, not a reason to die."""
    while True:
        store = make_store(url)
        try:
            await store.open()
        except StoreUnavailable as exc:
            log.warning("webhooks: the store does not answer (%s); trying again in %g s",
                        exc.detail, REOPEN_PAUSE)
            await asyncio.sleep(REOPEN_PAUSE)
        else:
            return store


async def _orphaned(parent: int) -> None:
    # No event says "my parent died" (prctl's death signal is Linux-only and per thread): look.
    # Then leave at once, whatever is under way (opening the store, waiting for a lock): a send
    # whose answer was not recorded goes again from the next dispatcher, so this loses nothing.
    while True:
        await asyncio.sleep(0.1)
        if os.getppid() != parent:
            log.warning("webhooks: the server process is gone; stopping")
            os._exit(0)


#: How much lower the webhook process's CPU priority is than the API's: under a burst the
#: kernel serves the appends first and the deliveries catch up once it passes. The lowest: at 10
#: the process still took about a quarter of a busy two-core machine and appends/s fell to 0.73x
#: (webhooks-sqlite, 2026-12-05); at 19 it gets what the API leaves, and a delivery still lands
#: within 150 ms (p99) at 1,000 jobs finishing a second. Never starved: Linux gives even nice 19
#: a share of a saturated CPU.
NICENESS = 19
#: Seconds the dispatcher is given to stop on its own before it is killed. At nice 19 on a CPU
#: the API's clients saturate, a clean stop can take longer than the whole shutdown may (10 s
#: seen with 8 SDK writers on two cores); killing it loses nothing: a delivery whose outcome was
#: not committed yet is sent again by the next dispatcher (at least once, as every delivery).
STOP_GRACE = 1.0


def _child_main(settings: Settings, parent: int, log_format: str) -> None:
    from jobtracker.server import logs

    logs.configure(log_format)
    with contextlib.suppress(OSError):
        os.nice(NICENESS)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_alone(settings, parent=parent))


def delivers_apart(settings: Settings) -> bool:
    """Whether `serve` delivers webhooks from a process of its own (`dispatcher_process`)."""
    return settings.webhooks and parse_store_url(settings.store_url).kind != "memory"


@contextlib.contextmanager
def dispatcher_process(settings: Settings, log_format: str = "text") -> Iterator[Settings]:
    """Run the dispatcher in a process of its own while the block runs; yields the settings for
    the API's processes (webhooks off: the child delivers them). It logs as `log_format`."""
    if not delivers_apart(settings):
        yield settings
        return
    context = multiprocessing.get_context("spawn")
    child = context.Process(target=_child_main, args=(settings, os.getpid(), log_format),
                            name="jobtracker-webhooks", daemon=True)
    # The child counts its deliveries in files of a folder of its own; a scrape of any of the
    # API's processes (which inherit the variable) reads them there.
    folder = tempfile.mkdtemp(prefix="jobtracker-webhook-metrics-")
    with metrics_folder(folder):
        child.start()
    os.environ[DELIVERIES_DIR_ENV] = folder
    try:
        yield attrs.evolve(settings, webhooks=False)
    finally:
        del os.environ[DELIVERIES_DIR_ENV]
        child.terminate()
        child.join(STOP_GRACE)
        if child.is_alive():
            child.kill()
            child.join()
        shutil.rmtree(folder, ignore_errors=True)
