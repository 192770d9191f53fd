"""Settings: where the store is and the limits the server enforces."""

from __future__ import annotations

import attrs

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
    #: Commit concurrent appends together (one durable commit for many requests).
    group_commit: bool = True
