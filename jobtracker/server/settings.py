"""Settings: where the store is and the limits the server enforces."""

from __future__ import annotations

import attrs

from jobtracker.domain.control import DEFAULT_CANCEL_GRACE
from jobtracker.domain.events import DEFAULT_HEARTBEAT_TIMEOUT
from jobtracker.store.url import DEFAULT_STORE_URL


@attrs.frozen
class Settings:
    """What the server needs to know."""

    store_url: str = DEFAULT_STORE_URL
    #: Row errors listed in a SUCCESS body before `errors_truncated`.
    errors_cap: int = 1000
    #: Largest request body accepted.
    max_body_bytes: int = 1024 * 1024
    #: Most events in one append.
    max_events: int = 10_000
    #: How often the change feed looks for appends made by other processes (seconds).
    feed_interval: float = 0.02
    #: How often an idle event stream sends a heartbeat comment (seconds): well inside the 60 s
    #: idle timeout of common proxies and load balancers, rare enough to cost little.
    heartbeat: float = 30.0
    #: Seconds a client gets to send a request's body once its headers are in: a client that
    #: trickles it (or stalls) is answered 408 instead of holding a connection and a task.
    body_timeout: float = 30.0
    #: Longest `?wait=` a GET may ask for (seconds).
    max_wait: int = 60
    #: Job control: a running job's heartbeat timeout when its creator gave none (seconds).
    heartbeat_timeout: int = DEFAULT_HEARTBEAT_TIMEOUT
    #: How long a running job asked to cancel has to stop before the server ends it (seconds).
    cancel_grace: float = DEFAULT_CANCEL_GRACE
    #: How often this server looks for jobs to end (seconds); 0 turns the reaper off.
    reaper_interval: float = 0.5
    #: Commit concurrent appends together (one durable commit for many requests).
    group_commit: bool = True
    #: Count requests, appends and waiters for Prometheus and serve them at `GET /metrics`.
    metrics: bool = True
    #: Serve `/metrics` on this port (on the API's host) instead of the API's own port.
    metrics_port: int | None = None
