"""Where a server listens: its ports checked before anything starts, and `/metrics` on a port of
its own (`serve --metrics-port`), for deployments that do not expose metrics with the API."""

from __future__ import annotations

import errno
import socket
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from jobtracker.domain.errors import ConfigError
from jobtracker.server.common import STORE
from jobtracker.server.metrics import metrics_handler


def check_port_free(host: str, port: int) -> None:
    """A `ConfigError` (one line, exit 2) when something already listens on `host:port`.

    Checked before the store opens or workers start, with the options the server binds with
    (SO_REUSEADDR, not SO_REUSEPORT), so a second `jobtracker serve` is told at once.
    """
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host!r}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise ConfigError(f"port {port} on {host} is already in use") from None
                raise


def metrics_site(
    host: str, port: int, *, reuse_port: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context for the API app that serves its `/metrics` on `host:port` meanwhile.

    With several workers each binds the port with SO_REUSEPORT: whichever answers a scrape adds
    up every worker's values, so it does not matter which.
    """

    async def serve_metrics(app: web.Application) -> AsyncIterator[None]:
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", metrics_handler(lambda: app[STORE]),
                                   allow_head=False)
        runner = web.AppRunner(metrics_app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
            yield
        finally:
            await runner.cleanup()

    return serve_metrics


def bind_error(exc: OSError) -> ConfigError | None:
    """The one-line error for a port taken between our check and the bind, else None."""
    if exc.errno != errno.EADDRINUSE:
        return None
    return ConfigError(f"cannot listen: {exc.strerror or exc}")

