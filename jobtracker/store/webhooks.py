"""Webhook persistence: subscriptions, their durable cursors, the delivery queue, the attempts.

A small interface of its own, reached as `Store.webhooks`. The queue's rules are the same in
every store, and `MemoryWebhooks` is their reference:
- `enqueue` moves a subscription's cursor and queues its deliveries in one write, and only if
  the cursor is still where the caller read it (another server may have been first);
- a `job.progress` delivery never tried yet takes in a newer progress of its job instead of
  queuing another, is due no sooner than `progress_gap` after the job's previous one, and, while
  held back for that gap, is dropped when the job's `job.succeeded` or `job.failed` is queued
  (the end's body is newer, and a job's end must not wait for a progress interval);
- `claim` leases due deliveries, each the oldest of its job and subscription still queued, so
  a job's deliveries go out one at a time in log order; an expired lease can be claimed again;
- `settle` records each attempt and removes or reschedules its delivery, only if the lease is
  still the caller's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

import attrs

from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.webhooks import MAX_SUBSCRIPTIONS, PROGRESS, TERMINAL_TYPES


@attrs.frozen
class Webhook:
    """A stored subscription; `cursor` is the last log position taken into its queue."""

    webhook_id: str
    key_id: str
    url: str
    events: tuple[str, ...]
    labels: dict[str, str]
    secret: str
    created_at: str
    cursor: int
    disabled_at: str | None = None


@attrs.frozen
class NewDelivery:
    """A delivery on its way into the queue."""

    msg_id: str
    job_id: str
    version: int
    type: str
    recorded_at: str
    due: float


@attrs.frozen
class QueueBatch:
    """One subscription's share of a stretch of the log: its cursor moves from `seen` to `upto`."""

    webhook_id: str
    seen: int
    upto: int
    deliveries: tuple[NewDelivery, ...] = ()


@attrs.frozen
class Delivery:
    """A queued delivery, as a claim hands it out."""

    delivery_id: int
    webhook_id: str
    msg_id: str
    job_id: str
    version: int
    type: str
    recorded_at: str
    attempts: int
    first_attempt: float | None


Verdict = Literal["delivered", "retry", "failed", "gone"]


@attrs.frozen
class Attempt:
    """One try at a delivery and what came of it."""

    webhook_id: str
    msg_id: str
    job_id: str
    version: int
    type: str
    attempted_at: float
    status: int | None
    error: str | None
    duration_ms: float
    next_attempt: float | None = None
    attempt_id: int = 0


@attrs.frozen
class Settlement:
    """What to do with a claimed delivery after a try: done, again at `attempt.next_attempt`,
    given up, or given up with its whole subscription (the receiver answered 410)."""

    delivery: Delivery
    verdict: Verdict
    attempt: Attempt


@attrs.frozen
class StepWork:
    """What one dispatcher step hands the store: answers to record, the log's new stretch to
    queue, and how many due deliveries of each subscription it can send now."""

    settlements: Sequence[Settlement]
    batches: Sequence[QueueBatch]
    progress_gap: float
    wanted: Mapping[str, int]
    now: float
    lease: float

    @property
    def writes(self) -> bool:
        """Whether there is anything to write besides a claim."""
        return bool(self.settlements) or bool(self.batches)


class WebhookStore(Protocol):
    """Where subscriptions and their deliveries live (see the module's rules)."""

    async def add(self, hook: Webhook) -> None:
        """Store a new subscription; `InvalidInput` when its key has `MAX_SUBSCRIPTIONS`."""

    async def get(self, webhook_id: str) -> Webhook | None:
        """One subscription, disabled or not."""

    async def for_key(self, key_id: str) -> list[Webhook]:
        """A key's subscriptions, oldest first."""

    async def delete(self, webhook_id: str) -> bool:
        """Remove a subscription, its queue and its attempts; False when there was none."""

    async def attempts(self, webhook_id: str, before: int | None, limit: int) -> list[Attempt]:
        """A subscription's attempts with an id below `before` (all when None), newest first."""

    async def prune_attempts(self, before: float, limit: int) -> int:
        """Delete those of the `limit` oldest attempts (by id) made before `before` (epoch
        seconds); how many went. Ids follow time, so a call that removes fewer than `limit` has
        reached the attempts to keep."""

    async def active(self) -> list[Webhook]:
        """Every subscription not disabled, with its cursor."""

    async def enqueue(self, batches: Sequence[QueueBatch], progress_gap: float) -> None:
        """Queue each batch and move its cursor, in one write; a batch whose cursor moved is
        skipped."""

    async def claim(
        self, wanted: Mapping[str, int], owner: str, now: float, lease: float
    ) -> list[Delivery]:
        """Lease up to `wanted[webhook_id]` due deliveries of each subscription to `owner`."""

    async def settle(self, owner: str, settlements: Sequence[Settlement]) -> None:
        """Record the attempts; remove, reschedule or give up their deliveries (one write)."""

    async def step(self, owner: str, work: StepWork) -> list[Delivery]:
        """`settle`, `enqueue` and `claim` in that order, in one write: a dispatcher's step."""


def iso_time(epoch: float) -> str:
    """Epoch seconds as the API shows times: RFC 3339, UTC, milliseconds."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def too_many() -> InvalidInput:
    """The error for a key that already holds the most subscriptions it may."""
    return InvalidInput(f"url: this key already has {MAX_SUBSCRIPTIONS} webhooks; delete one first")


@attrs.define
class _Queued:
    delivery: Delivery
    due: float
    lease_owner: str | None = None
    lease_until: float | None = None


class MemoryWebhooks:
    """The reference implementation, for the memory store."""

    def __init__(self) -> None:
        self._hooks: dict[str, Webhook] = {}
        self._queue: dict[int, _Queued] = {}
        self._attempts: list[Attempt] = []
        self._next_id = 1

    async def add(self, hook: Webhook) -> None:
        """See `WebhookStore.add`."""
        if sum(h.key_id == hook.key_id for h in self._hooks.values()) >= MAX_SUBSCRIPTIONS:
            raise too_many()
        self._hooks[hook.webhook_id] = hook

    async def get(self, webhook_id: str) -> Webhook | None:
        """See `WebhookStore.get`."""
        return self._hooks.get(webhook_id)

    async def for_key(self, key_id: str) -> list[Webhook]:
        """See `WebhookStore.for_key`."""
        return [h for h in self._hooks.values() if h.key_id == key_id]

    async def delete(self, webhook_id: str) -> bool:
        """See `WebhookStore.delete`."""
        self._queue = {
            k: q for k, q in self._queue.items() if q.delivery.webhook_id != webhook_id
        }
        self._attempts = [a for a in self._attempts if a.webhook_id != webhook_id]
        return self._hooks.pop(webhook_id, None) is not None

    async def attempts(self, webhook_id: str, before: int | None, limit: int) -> list[Attempt]:
        """See `WebhookStore.attempts`."""
        found = [
            a for a in reversed(self._attempts)
            if a.webhook_id == webhook_id and (before is None or a.attempt_id < before)
        ]
        return found[:limit]

    async def prune_attempts(self, before: float, limit: int) -> int:
        """See `WebhookStore.prune_attempts`."""
        oldest, rest = self._attempts[:limit], self._attempts[limit:]
        kept = [a for a in oldest if a.attempted_at >= before]
        self._attempts = kept + rest
        return len(oldest) - len(kept)

    async def active(self) -> list[Webhook]:
        """See `WebhookStore.active`."""
        return [h for h in self._hooks.values() if h.disabled_at is None]

    async def enqueue(self, batches: Sequence[QueueBatch], progress_gap: float) -> None:
        """See `WebhookStore.enqueue`."""
        for batch in batches:
            hook = self._hooks.get(batch.webhook_id)
            if hook is None or hook.cursor != batch.seen or hook.disabled_at is not None:
                continue
            self._hooks[hook.webhook_id] = attrs.evolve(hook, cursor=batch.upto)
            for new in batch.deliveries:
                self._queue_one(hook.webhook_id, new, progress_gap)

    def _of_job(self, webhook_id: str, job_id: str) -> list[tuple[int, _Queued]]:
        return [
            (k, q) for k, q in self._queue.items()
            if q.delivery.webhook_id == webhook_id and q.delivery.job_id == job_id
        ]

    def _queue_one(self, webhook_id: str, new: NewDelivery, gap: float) -> None:
        queued = self._of_job(webhook_id, new.job_id)
        untried = [(k, q) for k, q in queued
                   if q.delivery.type == PROGRESS and q.delivery.attempts == 0
                   and q.lease_owner is None]
        due = new.due
        if new.type == PROGRESS:
            if untried and untried[-1][0] == max(k for k, _ in queued):
                key, q = untried[-1]
                q.delivery = attrs.evolve(q.delivery, version=new.version,
                                          recorded_at=new.recorded_at)
                return
            due = max(due, self._last_progress(webhook_id, new.job_id, queued) + gap)
        elif new.type in TERMINAL_TYPES:
            for key, q in untried:
                if q.due > new.due:  # held back for the interval: the end supersedes it
                    del self._queue[key]
        delivery = Delivery(self._next_id, webhook_id, new.msg_id, new.job_id, new.version,
                            new.type, new.recorded_at, 0, None)
        self._queue[self._next_id] = _Queued(delivery, due)
        self._next_id += 1

    def _last_progress(
        self, webhook_id: str, job_id: str, queued: list[tuple[int, _Queued]]
    ) -> float:
        times = [q.due for _, q in queued if q.delivery.type == PROGRESS]
        times += [a.attempted_at for a in self._attempts
                  if a.webhook_id == webhook_id and a.job_id == job_id and a.type == PROGRESS]
        return max(times, default=float("-inf"))

    async def claim(
        self, wanted: Mapping[str, int], owner: str, now: float, lease: float
    ) -> list[Delivery]:
        """See `WebhookStore.claim`."""
        firsts: dict[tuple[str, str], int] = {}
        for key, q in sorted(self._queue.items()):
            firsts.setdefault((q.delivery.webhook_id, q.delivery.job_id), key)
        taken: list[Delivery] = []
        for webhook_id, most in wanted.items():
            due = sorted(
                (q.due, key) for key, q in self._queue.items()
                if q.delivery.webhook_id == webhook_id and q.due <= now
                and (q.lease_until is None or q.lease_until < now)
                and firsts[(webhook_id, q.delivery.job_id)] == key
            )
            for _, key in due[:most]:
                q = self._queue[key]
                q.lease_owner, q.lease_until = owner, now + lease
                taken.append(q.delivery)
        return taken

    async def step(self, owner: str, work: StepWork) -> list[Delivery]:
        """See `WebhookStore.step`."""
        await self.settle(owner, work.settlements)
        await self.enqueue(work.batches, work.progress_gap)
        return await self.claim(work.wanted, owner, work.now, work.lease)

    async def settle(self, owner: str, settlements: Sequence[Settlement]) -> None:
        """See `WebhookStore.settle`."""
        for s in settlements:
            q = self._queue.get(s.delivery.delivery_id)
            if q is None or q.lease_owner != owner:
                continue
            self._attempts.append(attrs.evolve(s.attempt, attempt_id=len(self._attempts) + 1))
            if s.verdict == "retry" and s.attempt.next_attempt is not None:
                first = q.delivery.first_attempt or s.attempt.attempted_at
                q.delivery = attrs.evolve(q.delivery, attempts=q.delivery.attempts + 1,
                                          first_attempt=first)
                q.due, q.lease_owner, q.lease_until = s.attempt.next_attempt, None, None
                continue
            del self._queue[s.delivery.delivery_id]
            if s.verdict == "gone":
                hook = self._hooks.get(s.delivery.webhook_id)
                if hook is not None:  # nothing more is sent to it: its queue goes too
                    disabled = iso_time(s.attempt.attempted_at)
                    self._hooks[hook.webhook_id] = attrs.evolve(hook, disabled_at=disabled)
                    self._queue = {k: q for k, q in self._queue.items()
                                   if q.delivery.webhook_id != hook.webhook_id}
