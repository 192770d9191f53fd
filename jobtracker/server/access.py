"""The access log (`serve --access-log`): one line per answered request, and who sent it.

A line has the request's method, route template, path (cut at `LONGEST_PATH`, never the query
string), status, duration, client and request id. The client is the peer, or with trusted proxies
(`--forwarded-allow-ips`, as gunicorn and uvicorn spell it) the address they report in
`X-Forwarded-For`. Lines are written straight to the server's log handler without a log record:
on the GET hot path a record and the logging machinery around it cost more than the line itself.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import ClassVar

import attrs
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from jobtracker.domain.errors import ConfigError
from jobtracker.server.logs import (
    ACCESS_LOGGER_NAME,
    ID_PREFIX,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    BufferedStderr,
    redact,
)

ACCESS_LOGGER = logging.getLogger(ACCESS_LOGGER_NAME)
#: Characters of a request's path an access log line shows at most.
LONGEST_PATH = 256
#: Addresses whose trust a server remembers (clients behind a proxy come and go).
TRUST_MEMORY = 4096

#: The clock of a line (`log` has a parameter named `time`).
_now = time.time
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@attrs.frozen
class TrustedProxies:
    """The peers whose `X-Forwarded-For` we believe: addresses or networks, or everyone (`*`)."""

    networks: tuple[IpNetwork, ...] = ()
    everyone: bool = False
    #: What `trusts` answered for each address lately: parsing one costs more than a log line.
    _answers: dict[str, bool] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> TrustedProxies:
        """`127.0.0.1,10.0.0.0/8` or `*`; anything else is a `ConfigError`."""
        items = [item.strip() for item in spec.split(",") if item.strip()]
        if "*" in items:
            return cls(everyone=True)
        try:
            return cls(tuple(ipaddress.ip_network(item, strict=False) for item in items))
        except ValueError as exc:
            raise ConfigError(f"--forwarded-allow-ips: {exc}") from None

    def trusts(self, address: str | None) -> bool:
        """Whether `address` (an IP literal) is one of ours."""
        if self.everyone:
            return True
        if address is None:
            return False
        answer = self._answers.get(address)
        if answer is None:
            ip = _ip(address)
            answer = ip is not None and any(ip in network for network in self.networks)
            if len(self._answers) >= TRUST_MEMORY:
                self._answers.clear()
            self._answers[address] = answer
        return answer


def _ip(address: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def client_address(request: web.BaseRequest, trusted: TrustedProxies) -> str | None:
    """Who sent the request: the peer, unless it is a trusted proxy; then the nearest address in
    `X-Forwarded-For` that is not one of ours (all trusted: the first). Only IP literals count:
    anything else stops the walk at the proxy that passed it on."""
    peer = request.remote
    if "X-Forwarded-For" not in request.headers or not trusted.trusts(peer):
        return peer
    forwarded = ",".join(request.headers.getall("X-Forwarded-For"))
    client = peer
    for hop in reversed([part.strip() for part in forwarded.split(",") if part.strip()]):
        if _ip(hop) is None:
            break
        client = hop
        if not trusted.trusts(hop):
            break
    return client


def route_of(request: web.BaseRequest) -> str:
    """The route template that matched (`/api/v1/jobs/{job_id}`), or `unmatched`: never an id."""
    match_info = getattr(request, "match_info", None)
    resource = None if match_info is None else match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


class AccessLog(AbstractAccessLogger):
    """One INFO line per answered request, as from the `jobtracker.access` logger."""

    #: Set per server by `access_log_class` (aiohttp makes an instance per connection).
    trusted: ClassVar[TrustedProxies] = TrustedProxies()
    #: Where lines go; None: through `logger` as records (a server that configured no logs).
    sink: ClassVar[BufferedStderr | None] = None

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Write the line. Only the path and the request id come from the caller as they are
        (the method is one aiohttp's parser knows, the client an IP address): those are redacted
        here, so the line needs no redaction as a whole."""
        remote = client_address(request, self.trusted)
        path = request.path
        if len(path) > LONGEST_PATH:  # a hostile 8 KB path must not make an 8 KB line
            path = path[:LONGEST_PATH] + "..."
        path = redact(path)
        request_id = response.headers.get(REQUEST_ID_HEADER) or REQUEST_ID.get()
        if request_id is not None and not request_id.startswith(ID_PREFIX):
            request_id = redact(request_id)  # the caller's: a key would be a sane token too
        access = {"method": request.method, "route": route_of(request), "path": path,
                  "status": response.status, "duration": time, "remote": remote}
        if self.sink is None:
            message = f'{remote} "{request.method} {path}" {response.status} {time:.6f} s'
            self.logger.info(message, extra={"request_id": request_id})
            return
        try:  # noqa: SIM105 - a `with suppress` costs a context manager per request
            self.sink.write_line(self.sink.lines.access_line(_now(), request_id, access))
        except OSError:
            pass  # a full disk must not fail requests that were answered already

    @property
    def enabled(self) -> bool:
        """Whether INFO lines of this logger go anywhere."""
        return self.logger.isEnabledFor(logging.INFO)


def access_log_class(trusted: TrustedProxies, sink: BufferedStderr | None) -> type[AccessLog]:
    """`AccessLog` believing `trusted` proxies and writing to `sink` (aiohttp takes a class)."""
    return type("ServerAccessLog", (AccessLog,), {"trusted": trusted, "sink": sink})
