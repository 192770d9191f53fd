"""Settings: where the store is and the limits the server enforces."""

from __future__ import annotations

import attrs

from jobtracker.domain.control import DEFAULT_CANCEL_GRACE
from jobtracker.domain.events import DEFAULT_HEARTBEAT_TIMEOUT
from jobtracker.domain.webhooks import DEFAULT_GIVE_UP, DEFAULT_RETRY_DELAYS
from jobtracker.store.url import DEFAULT_STORE_URL


@attrs.frozen
class Settings:
    """What the server needs to know."""

    store_url: str = DEFAULT_STORE_URL
    #: A PostgreSQL standby of the store that job GETs read from (`server/replica.py`).
    read_url: str | None = None
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
    #: Retention: prune jobs finished more than this many seconds ago, in the background
    #: (None: keep everything, the default).
    retention: int | None = None
    #: Jobs removed per prune transaction: an append waits for at most one batch.
    prune_batch: int = 100
    #: How often this server looks for jobs pruned, or replayed, by anyone, to forget what it
    #: holds of them.
    tombstone_interval: float = 1.0
    #: Webhooks: run the dispatcher that delivers them inside this server.
    webhooks: bool = True
    #: Allow `http://` webhook URLs (only `https://` otherwise).
    webhook_allow_http: bool = False
    #: Allow webhooks to loopback, private, link-local and multicast addresses.
    webhook_allow_private: bool = False
    #: At most one `job.progress` delivery per job and subscription this often (seconds).
    webhook_progress_interval: float = 5.0
    #: Seconds between tries of a failed delivery; the last repeats until `webhook_give_up`.
    webhook_retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    #: Seconds after its first try that a delivery is given up.
    webhook_give_up: float = DEFAULT_GIVE_UP
    #: Seconds a receiver has to answer one delivery.
    webhook_timeout: float = 10.0
    #: Seconds a server holds the deliveries it took; a dead server's are taken over after it.
    webhook_lease: float = 20.0
    #: How often the dispatcher looks at the log when no append woke it (seconds).
    webhook_poll: float = 0.5
