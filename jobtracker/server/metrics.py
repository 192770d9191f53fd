"""Prometheus metrics (`prometheus_client`): the families CONTRACT.md names, served at /metrics.

Every request is counted (by the wrapper `server/errors.answering` puts around each route) under
its route *template* and a known method (anything else is `other`; a path no route matches is
`unmatched`), so no caller can make a label value of its own. The label children are looked up
once per (method, route, status) and kept: `labels()` costs as much as the increment itself.

With `serve --workers N` the parent process gives the workers a fresh folder in
`PROMETHEUS_MULTIPROC_DIR` before it starts them; prometheus_client then keeps each worker's values
in a file of its own there, and a scrape, whichever worker serves it, adds up every worker's files
(`MultiProcessCollector`): counters and histograms are summed, and the waiters gauge is summed over
the workers still alive. `jobtracker_jobs` is read from the store at each scrape
(`Store.job_counts`, a table the store keeps by triggers: never a count over the jobs table).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.state import Status
from jobtracker.store import Store

#: Where prometheus_client keeps each process's values when several processes serve.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How long a scrape waits for the store's job counts before it answers without them.
COUNTS_TIMEOUT = 2.0
#: The methods counted by name; anything else a client sends is counted as `other`.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The status of a request whose client went away before it was answered (nginx's convention).
CLIENT_GONE = 499
#: Why an append was refused, by the status it was answered with.
REJECTIONS = {
    400: "malformed", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
    408: "timeout", 409: "conflict", 410: "expired", 413: "too_large", 422: "invalid",
    503: "unavailable",
}
APPEND_ROUTE = "/api/v1/jobs/{job_id}/events"
READY_ROUTE = "/readyz"
#: The reasons the reaper ends a job with (CONTRACT.md, "Job control").
REAP_REASONS = ("worker_lost", "timed_out", "cancelled")
LONG_POLL, STREAM = "long-poll", "stream"

# `_created` series double every family's size for a figure Prometheus does not need; the
# multiprocess mode never has them, so a scrape looks the same with one process or several.
disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter(
    "jobtracker_http_requests_total", "HTTP requests answered, by method, route template, status.",
    ("method", "route", "status"),
)
HTTP_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0, 30.0, 60.0)
HTTP_SECONDS = Histogram(
    "jobtracker_http_request_duration_seconds",
    "Seconds from a request reaching the app to its answer (a stream: its whole life).",
    ("method", "route"), buckets=HTTP_SECONDS_BUCKETS,
)
EVENTS_APPENDED = Counter(
    "jobtracker_events_appended_total", "Events appended through this server (re-sends excluded)."
)
APPENDS_REJECTED = Counter(
    "jobtracker_appends_rejected_total", "Append requests refused, by reason.", ("reason",)
)
COMMIT_GROUP_SIZE = Histogram(
    "jobtracker_commit_group_size", "Append requests committed together in one transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
WAITERS = Gauge(
    "jobtracker_waiters", "Requests held open for a job's change, by kind.", ("kind",),
    multiprocess_mode="livesum",
)
JOBS_REAPED = Counter(
    "jobtracker_jobs_reaped_total", "Jobs the reaper ended, by reason.", ("reason",)
)
# Not in the default registry: `serve` delivers from a process of its own, whose counts a scrape
# reads from that process's files (`_deliveries`); an in-app dispatcher's are read from here.
WEBHOOK_DELIVERIES = Counter(
    "jobtracker_webhook_deliveries_total", "Webhook delivery attempts, by outcome (delivered, "
    "retry, failed, gone).", ("outcome",), registry=None,
)
#: The folder where the webhook process started by `serve` keeps its counts.
DELIVERIES_DIR_ENV = "JOBTRACKER_WEBHOOK_METRICS_DIR"
STORE_ERRORS = Counter(
    "jobtracker_store_errors_total", "Requests and probes that failed because the store did not "
    "answer (each a 503).",
)
_LONG_POLLS, _STREAMS = WAITERS.labels(LONG_POLL), WAITERS.labels(STREAM)
for _reason in REAP_REASONS:
    JOBS_REAPED.labels(_reason)


def count_delivery(outcome: str) -> None:
    """A webhook delivery was tried (`outcome`: delivered, retry, failed or gone)."""
    WEBHOOK_DELIVERIES.labels(outcome).inc()


def count_reaped(reason: str) -> None:
    """The reaper ended a job (`reason`: worker_lost, timed_out or cancelled)."""
    JOBS_REAPED.labels(reason if reason in REAP_REASONS else "other").inc()


def count_appended(events: int) -> None:
    """An append wrote `events` new events."""
    if events:
        EVENTS_APPENDED.inc(events)


@contextlib.contextmanager
def waiting(kind: str) -> Iterator[None]:
    """Counts a request held open (`LONG_POLL` or `STREAM`) for as long as the block runs."""
    gauge = _LONG_POLLS if kind == LONG_POLL else _STREAMS
    gauge.inc()
    try:
        yield
    finally:
        gauge.dec()


class _Children:
    """The label children one (method, route, status) touches, looked up once, and the answers
    counted since the last flush into them (`_flush_answers`)."""

    __slots__ = ("buckets", "extra", "pending", "requests", "seconds", "store_error", "total")

    def __init__(self, method: str, route: str, status: int) -> None:
        self.requests = HTTP_REQUESTS.labels(method, route, str(status))
        self.seconds = HTTP_SECONDS.labels(method, route)
        refused = route == APPEND_ROUTE and method == "POST" and status >= 400
        self.extra = APPENDS_REJECTED.labels(REJECTIONS.get(status, "other")) if refused else None
        self.store_error = status == 503 and route != READY_ROUTE
        self.pending = 0
        self.total = 0.0
        self.buckets = [0] * (len(HTTP_SECONDS_BUCKETS) + 1)  # the last: above every bound

    def flush(self) -> None:
        """Add what was counted since the last flush to the prometheus_client children."""
        self.requests.inc(self.pending)
        # The histogram takes one observation at a time; these are its two values (stable in
        # prometheus_client since 0.4), the bucket counts and the sum, added to in bulk.
        self.seconds._sum.inc(self.total)
        for value, count in zip(self.seconds._buckets, self.buckets, strict=True):
            if count:
                value.inc(count)
        self.pending, self.total = 0, 0.0
        self.buckets = [0] * len(self.buckets)


#: Children with answers counted but not yet flushed.
_UNFLUSHED: list[_Children] = []


def _flush_answers() -> None:
    """Move the answers counted in memory into prometheus_client (before a scrape reads it)."""
    while _UNFLUSHED:
        _UNFLUSHED.pop().flush()


#: Counts one answer of a route: its method, its status, and the seconds it took.
RouteCounter = Callable[[str, int, float], None]


class HttpMetrics:
    """Counts each answered request: requests by status, duration, refused appends, 503s.

    Each answer is added to plain counters in memory and moved into prometheus_client when this
    process serves a scrape: a counter's and a histogram's locked increments cost a GET several
    percent of its time. With several worker processes each answer is moved at once, as the
    scrape may be served by another worker, which reads this one's values from their file.
    """

    def __init__(self) -> None:
        self._eager = bool(os.environ.get(MULTIPROC_ENV))

    def route(self, route: str) -> RouteCounter:
        """What counts the answers of the route with template `route`."""
        children: dict[tuple[str, int], _Children] = {}
        eager = self._eager

        def record(method: str, status: int, seconds: float) -> None:
            if method not in KNOWN_METHODS:
                method = "other"  # a client's own method must not become a label, nor a key
            found = children.get((method, status))
            if found is None:
                found = children[method, status] = _Children(method, route, status)
            if not found.pending:
                _UNFLUSHED.append(found)
            found.pending += 1
            found.total += seconds
            found.buckets[bisect.bisect_left(HTTP_SECONDS_BUCKETS, seconds)] += 1
            if eager:
                _flush_answers()
            if found.extra is not None:
                found.extra.inc()
            if found.store_error:
                STORE_ERRORS.inc()

        return record


class _JobCounts(Collector):
    """`jobtracker_jobs{status}` from the counts the store keeps."""

    def __init__(self, counts: dict[str, int]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily("jobtracker_jobs", "Jobs in the store, by status.",
                                   labels=("status",))
        for status in Status:
            family.add_metric((status.value,), self._counts.get(status.value, 0))
        yield family


def _process_values() -> CollectorRegistry:
    """This process's registry, or with several workers every worker's files added up."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


@contextlib.contextmanager
def metrics_folder(folder: str) -> Iterator[None]:
    """Processes spawned in the block keep their metrics in files in `folder`.

    The variable must be in a process's environment before it imports prometheus_client, which
    picks its value store on import; spawned processes copy ours as they start.
    """
    before = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        if before is None:
            del os.environ[MULTIPROC_ENV]
        else:
            os.environ[MULTIPROC_ENV] = before


class _Only(Collector):
    """One family of what another collector yields (the webhook process's files hold zeros of
    every family it imported; only its deliveries are its own)."""

    def __init__(self, inner: Collector, name: str) -> None:
        self._inner, self._name = inner, name

    def collect(self) -> Iterable[Metric]:
        return (family for family in self._inner.collect() if family.name == self._name)


def _deliveries() -> bytes:
    """`jobtracker_webhook_deliveries_total`: the webhook process's counts, or this process's."""
    registry = CollectorRegistry(auto_describe=False)
    folder = os.environ.get(DELIVERIES_DIR_ENV)
    if folder:
        files = MultiProcessCollector(None, path=folder)  # type: ignore[no-untyped-call]
        registry.register(_Only(files, "jobtracker_webhook_deliveries"))
    else:
        registry.register(WEBHOOK_DELIVERIES)
    return generate_latest(registry)


async def exposition(store: Store) -> bytes:
    """The whole scrape: every family, and the job counts unless the store did not answer."""
    _flush_answers()
    text = generate_latest(_process_values()) + _deliveries()
    try:
        async with asyncio.timeout(COUNTS_TIMEOUT):
            counts = await store.job_counts()
    except (JobtrackerError, TimeoutError):
        STORE_ERRORS.inc()
        return text
    jobs = CollectorRegistry(auto_describe=False)
    jobs.register(_JobCounts(counts))
    return text + generate_latest(jobs)


def metrics_handler(store_of: Callable[[], Store]) -> Handler:
    """`GET /metrics` for the store `store_of()` returns (no key: keep it off public networks, or
    serve it on its own port with `serve --metrics-port`)."""

    async def metrics(request: web.Request) -> web.Response:
        body = await exposition(store_of())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return metrics
