"""One delivery, one POST: the body at the event's version, signed the Standard Webhooks way.

A 2xx answer is delivered; a 410 disables the subscription; anything else, a timeout or a refused
address is tried again after the next delay of the schedule, until the give-up time has passed
since the first try. Redirects are not followed and at most 64 KiB of an answer is read.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any

import aiohttp
import standardwebhooks

from jobtracker.domain import codec
from jobtracker.domain.events import Created
from jobtracker.domain.projection import Batch, fold_batch, job_body, start
from jobtracker.domain.webhooks import retry_delay
from jobtracker.server.settings import Settings
from jobtracker.server.webhooks.guard import GuardedResolver, check_literal
from jobtracker.store import Store
from jobtracker.store.webhooks import Attempt, Delivery, Settlement, Verdict, Webhook

#: Most bytes of a receiver's answer read; the rest is dropped with the connection.
MAX_ANSWER = 64 * 1024
#: Events read at a time when a job is folded back to an earlier version.
FOLD_PAGE = 5000


async def body_at(store: Store, job_id: str, version: int, errors_cap: int) -> Any | None:
    """The job's GET body as it was at `version` (None when the job is gone).

    The newest version is the stored projection; an older one is the pure fold of the job's
    events up to it, the same fold the live path uses.
    """
    view = await store.get_job(job_id, errors_cap)
    if view is None:
        return None
    if view.state.version == version:
        return job_body(view.state, view.errors, errors_cap)
    events = await store.read_job_events(job_id, 0, min(version, FOLD_PAGE))
    if not events or not isinstance(events[0].event, Created):
        return None
    batch = fold_batch(start(job_id, events[0].event), [e.event for e in events[1:]])
    while batch.state.version < version:
        more = await store.read_job_events(
            job_id, batch.state.version, min(version - batch.state.version, FOLD_PAGE))
        if not more:
            break
        step = fold_batch(batch.state, [e.event for e in more])
        batch = Batch(step.state, (), batch.row_errors + step.row_errors)
    errors = sorted(batch.row_errors)[:errors_cap]
    return job_body(batch.state, errors, errors_cap)


def open_session(settings: Settings) -> aiohttp.ClientSession:
    """The dispatcher's HTTP client: guarded resolver, no cookies, no redirects, its own pool."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(allow_private=settings.webhook_allow_private),
        use_dns_cache=False,
        limit=0,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": "jobtracker-webhooks"},
    )


class Sender:
    """Makes one try of a delivery and says what comes of it."""

    def __init__(self, store: Store, settings: Settings, session: aiohttp.ClientSession) -> None:
        self._store = store
        self._settings = settings
        self._session = session

    async def send(self, hook: Webhook, delivery: Delivery) -> Settlement:
        """POST the delivery once; the settlement to record."""
        started, clock = time.time(), time.monotonic()
        status: int | None = None
        error: str | None = None
        body = await body_at(self._store, delivery.job_id, delivery.version,
                             self._settings.errors_cap)
        if body is None:
            return self._settle(delivery, "failed", started, clock, None, "job no longer exists")
        payload = codec.dumps({"type": delivery.type, "timestamp": delivery.recorded_at,
                               "data": body})
        try:
            check_literal(hook.url, allow_private=self._settings.webhook_allow_private)
            status = await self._post(hook, delivery.msg_id, payload)
        except (aiohttp.ClientError, OSError) as exc:
            error = _describe(exc)
        except TimeoutError:
            error = f"no answer within {self._settings.webhook_timeout:g} s"
        delay = retry_delay(delivery.attempts + 1, self._settings.webhook_retry_delays,
                            random.uniform(-1.0, 1.0))
        verdict = self._verdict(delivery, status, started, delay)
        return self._settle(delivery, verdict, started, clock, status, error, delay)

    async def _post(self, hook: Webhook, msg_id: str, payload: bytes) -> int:
        now = int(time.time())
        signature = standardwebhooks.Webhook(hook.secret).sign(
            msg_id, dt.datetime.fromtimestamp(now, dt.UTC), payload)
        headers = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
            "Content-Type": "application/json",
        }
        timeout = aiohttp.ClientTimeout(total=self._settings.webhook_timeout)
        async with self._session.post(hook.url, data=payload, headers=headers,
                                      allow_redirects=False, timeout=timeout) as answer:
            await answer.content.read(MAX_ANSWER)
            return answer.status

    def _verdict(
        self, delivery: Delivery, status: int | None, now: float, delay: float
    ) -> Verdict:
        if status is not None and 200 <= status < 300:
            return "delivered"
        if status == 410:
            return "gone"
        first = delivery.first_attempt or now
        if now + delay - first > self._settings.webhook_give_up:
            return "failed"
        return "retry"

    def _settle(
        self, delivery: Delivery, verdict: Verdict, started: float, clock: float,
        status: int | None, error: str | None, delay: float = 0.0,
    ) -> Settlement:
        next_attempt = started + delay if verdict == "retry" else None
        attempt = Attempt(
            delivery.webhook_id, delivery.msg_id, delivery.job_id, delivery.version,
            delivery.type, started, status, error, round((time.monotonic() - clock) * 1000, 1),
            next_attempt,
        )
        return Settlement(delivery, verdict, attempt)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]
