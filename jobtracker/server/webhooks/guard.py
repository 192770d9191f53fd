"""Where a webhook may be sent: never to loopback, private, link-local or multicast addresses
unless the server allows it, checked when a subscription is made and again at every delivery.

At delivery the check sits in the HTTP client's resolver (`GuardedResolver`), so the addresses
checked are the very addresses connected to: a name that resolves to a public address when the
subscription is made and to 127.0.0.1 later (DNS rebinding) is refused at that later send.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.webhooks import forbidden_address


class DestinationRefused(OSError):
    """A webhook's host resolves to an address the server may not call."""

    def __init__(self, reason: str) -> None:
        # With an errno, so the HTTP client's connection error repeats the reason.
        super().__init__(errno.EACCES, reason)


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def refusal(host: str, addresses: list[str]) -> str | None:
    """Why `host`, resolving to `addresses`, may not be called (None: it may)."""
    for address in addresses:
        reason = forbidden_address(address)
        if reason is not None:
            return f"{host} resolves to {reason}" if host != address else reason
    return None


def check_url(url: str, *, allow_http: bool) -> None:
    """Refuse a URL we would not call: not https (or http when allowed), no host, credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidInput("url: not a valid URL") from None
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise InvalidInput(f"url: must start with {' or '.join(s + '://' for s in schemes)}")
    if not parts.hostname:
        raise InvalidInput("url: must name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput("url: must not carry credentials")
    if port == 0:
        raise InvalidInput("url: port 0 cannot be called")


async def check_destination(url: str, *, allow_private: bool) -> None:
    """At subscription: `InvalidInput` naming `url` when its host may not be called."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidInput(f"url: host {host[:100]!r} does not resolve") from None
    if allow_private:
        return
    reason = refusal(host, [str(info[4][0]) for info in found])
    if reason is not None:
        raise InvalidInput(f"url: refused, {reason}")


def check_literal(url: str, *, allow_private: bool) -> None:
    """At delivery: refuse a URL whose host is an IP address we may not call (a literal address
    never reaches the resolver)."""
    host = urlsplit(url).hostname or ""
    if not allow_private and _literal(host):
        reason = forbidden_address(host)
        if reason is not None:
            raise DestinationRefused(f"refused: {reason}")


class GuardedResolver(AbstractResolver):
    """The HTTP client's resolver: the system's, refusing forbidden addresses."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The addresses of `host`, unless one of them may not be called."""
        found = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            reason = refusal(host, [r["host"] for r in found])
            if reason is not None:
                raise DestinationRefused(f"refused: {reason}")
        return found

    async def close(self) -> None:
        """Release the system resolver."""
        await self._inner.close()
