"""A real jobtracker server on a real port, in a thread of its own, for the synchronous SDK."""

from __future__ import annotations

import asyncio
import faulthandler
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import attrs
import pytest
from aiohttp import web

from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import SqliteStore
from jobtracker.store.keys import issue_key


@attrs.frozen
class LiveServer:
    """Where the server listens, the SQLite file behind it and two keys."""

    base_url: str
    store_url: str
    db_path: str
    owner_key: str
    worker_key: str
    #: Appends the server has answered (or dropped), counted by a middleware.
    append_requests: list[str]


async def _issue_keys(db_path: str) -> tuple[str, str]:
    store = SqliteStore(db_path)
    await store.open()
    try:
        owner = await issue_key(store, "owner")
        worker = await issue_key(store, "worker", scope="worker", owners=[owner.record.key_id])
    finally:
        await store.close()
    return owner.secret, worker.secret


class ServerThread:
    """Run an aiohttp app on its own loop in a thread, on a socket bound to a free port."""

    def __init__(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    async def _start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    def stop(self) -> None:
        cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        try:
            cleanup.result(timeout=30)
        except TimeoutError:
            # Seen once in CI and never reproduced: leave the evidence of what held the shutdown.
            faulthandler.dump_traceback(all_threads=True)
            for task in asyncio.all_tasks(self._loop):
                task.print_stack()
            raise
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._sock.close()


Middleware = Callable[..., object]


@pytest.fixture
def live_server_with(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start a live server, optionally with extra middlewares (outermost first)."""
    started: list[ServerThread] = []

    def start(*middlewares: Middleware) -> LiveServer:
        db_path = str(tmp_path / "live.db")
        # A thread of its own: asyncio tests call this from inside their running loop.
        with ThreadPoolExecutor(1) as pool:
            owner, worker = pool.submit(asyncio.run, _issue_keys(db_path)).result()
        appends: list[str] = []

        @web.middleware
        async def count_appends(request: web.Request, handler: Callable[..., object]) -> object:
            if request.path.endswith("/events"):
                appends.append(request.path)
            return await handler(request)  # type: ignore[misc]

        app = create_app(Settings(store_url=f"sqlite:///{db_path}"))
        for middleware in (count_appends, *middlewares):
            app.middlewares.insert(0, middleware)  # type: ignore[arg-type]
        server = ServerThread(app)
        server.start()
        started.append(server)
        base_url = f"http://127.0.0.1:{server.port}"
        return LiveServer(base_url, f"sqlite:///{db_path}", db_path, owner, worker, appends)

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def live_server(live_server_with: Callable[..., LiveServer]) -> LiveServer:
    """A live server with no tricks."""
    return live_server_with()
