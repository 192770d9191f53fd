"""The dispatcher: tails the log into each subscription's queue, and sends what is due.

The log is the outbox. Each step reads the log after the lowest subscription cursor
(`Store.read_log`, gap-safe: SQLite commits in position order, PostgreSQL draws positions under
a lock held to COMMIT, so a reader never passes a position that a late commit then fills), and
queues each subscription's deliveries while moving its cursor, in one write. Then it leases the
due deliveries (`WebhookStore.claim`), sends each in a task of its own, and records the answers
(`WebhookStore.settle`). A crash between a send and its record repeats the send, with the same
`webhook-id`, once the lease runs out: at least once, never lost.

At most `PER_SUBSCRIPTION` sends of one subscription run at once and `IN_FLIGHT` in all, so one
slow or dead receiver holds a few slots for at most the send timeout, never the others' turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from jobtracker.domain.errors import JobtrackerError
from jobtracker.domain.events import Created, RecordedEvent
from jobtracker.domain.webhooks import PROGRESS, labels_match, webhook_type
from jobtracker.server.settings import Settings
from jobtracker.server.webhooks.sending import Sender, open_session
from jobtracker.store import Store
from jobtracker.store.webhooks import (
    Delivery,
    NewDelivery,
    QueueBatch,
    Settlement,
    StepWork,
    Webhook,
)

log = logging.getLogger(__name__)

#: Log events read per step.
READ_BATCH = 1000
#: Sends of one subscription at once, and of all of them.
PER_SUBSCRIPTION = 128
IN_FLIGHT = 512
#: Seconds between steps at the busiest: answers and appends arriving meanwhile share one write.
STEP_GAP = 0.05
#: Jobs whose owner and labels the dispatcher remembers.
JOB_MEMORY = 100_000

JobFacts = tuple[str, dict[str, str]]


def message_id(webhook_id: str, event_id: str) -> str:
    """A delivery's `webhook-id`: derived from the subscription and the event, so an event queued
    again (after a lost commit of the queue) goes out under the id it had."""
    return "msg_" + hashlib.sha256(f"{webhook_id}\n{event_id}".encode()).hexdigest()[:32]


class Dispatcher:
    """Delivers every subscription's events; run one per server process (or alone)."""

    def __init__(
        self, store: Store, settings: Settings,
        *, on_settled: Callable[[Settlement], None] = lambda s: None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._on_settled = on_settled
        self.owner = f"dispatcher-{uuid.uuid4().hex[:12]}"
        self._jobs: OrderedDict[str, JobFacts] = OrderedDict()
        self._in_flight: dict[str, int] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._settled: list[Settlement] = []
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Something was appended or answered: step now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Step until cancelled; store errors are logged and tried again."""
        self._store.on_append(self.poke)
        async with open_session(self._settings) as session:
            sender = Sender(self._store, self._settings, session)
            try:
                while True:
                    self._wake.clear()
                    try:
                        await self.step(sender)
                    except JobtrackerError as exc:
                        log.warning("webhooks: %s", exc.detail)
                        await asyncio.sleep(1.0)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._settings.webhook_poll)
                    # What else arrives meanwhile shares the next step's one write.
                    await asyncio.sleep(STEP_GAP)
            finally:
                await self._finish()

    async def _finish(self) -> None:
        for task in self._sends:
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        settled, self._settled = self._settled, []
        with contextlib.suppress(JobtrackerError):
            await self._store.webhooks.settle(self.owner, settled)

    async def step(self, sender: Sender) -> None:
        """Record answers, queue what the log gained, claim what is due: one write; then send."""
        hooks = await self._store.webhooks.active()
        settled, self._settled = self._settled, []
        try:
            work = StepWork(settled, await self._take_in(hooks),
                            self._settings.webhook_progress_interval, self._slots(hooks),
                            time.time(), self._settings.webhook_lease)
            claimed = await self._store.webhooks.step(self.owner, work)
        except BaseException:
            self._settled = settled + self._settled
            raise
        by_id = {hook.webhook_id: hook for hook in hooks}
        for delivery in claimed:
            self._start(sender, by_id[delivery.webhook_id], delivery)

    async def _take_in(self, hooks: list[Webhook]) -> list[QueueBatch]:
        if not hooks:
            return []
        low = min(hook.cursor for hook in hooks)
        events = await self._store.read_log(low, READ_BATCH)
        if not events:
            return []
        upto, now = events[-1].position, time.time()
        batches = []
        for hook in hooks:
            if hook.cursor < upto:
                deliveries = await self._deliveries(hook, events, now)
                batches.append(QueueBatch(hook.webhook_id, hook.cursor, upto, deliveries))
        if len(events) == READ_BATCH:
            self.poke()  # more of the log to read
        return batches

    async def _deliveries(
        self, hook: Webhook, events: list[RecordedEvent], now: float
    ) -> tuple[NewDelivery, ...]:
        found: list[NewDelivery] = []
        last_of_job: dict[str, int] = {}
        for recorded in events:
            if recorded.position <= hook.cursor:
                continue
            kind = webhook_type(recorded.event)
            if isinstance(recorded.event, Created):
                self._remember_created(recorded)
            if kind is None or kind not in hook.events:
                continue
            owner, labels = await self._facts(recorded)
            if owner != hook.key_id or not labels_match(hook.labels, labels):
                continue
            new = NewDelivery(message_id(hook.webhook_id, recorded.event_id), recorded.job_id,
                              recorded.version, kind, recorded.recorded_at, now)
            earlier = last_of_job.get(recorded.job_id)
            if kind == PROGRESS and earlier is not None and found[earlier].type == PROGRESS:
                # progress after progress in one read: the newer body only, under the first id
                found[earlier] = NewDelivery(found[earlier].msg_id, new.job_id, new.version,
                                             kind, new.recorded_at, now)
                continue
            last_of_job[recorded.job_id] = len(found)
            found.append(new)
        return tuple(found)

    def _remember_created(self, recorded: RecordedEvent) -> None:
        created = recorded.event
        assert isinstance(created, Created)
        self._jobs[recorded.job_id] = (created.owner, dict(created.labels or ()))
        if len(self._jobs) > JOB_MEMORY:
            self._jobs.popitem(last=False)

    async def _facts(self, recorded: RecordedEvent) -> JobFacts:
        """A job's owner and labels: from its `created` event, which never changes."""
        facts = self._jobs.get(recorded.job_id)
        if facts is None:
            first = await self._store.read_job_events(recorded.job_id, 0, 1)
            if first and isinstance(first[0].event, Created):
                self._remember_created(first[0])
            facts = self._jobs.get(recorded.job_id, ("", {}))
        return facts

    def _slots(self, hooks: list[Webhook]) -> dict[str, int]:
        free = IN_FLIGHT - len(self._sends)
        wanted: dict[str, int] = {}
        for hook in hooks:
            slots = min(PER_SUBSCRIPTION - self._in_flight.get(hook.webhook_id, 0), free)
            if slots > 0:
                wanted[hook.webhook_id] = slots
                free -= slots
        return wanted

    def _start(self, sender: Sender, hook: Webhook, delivery: Delivery) -> None:
        self._in_flight[hook.webhook_id] = self._in_flight.get(hook.webhook_id, 0) + 1
        task = asyncio.create_task(self._send(sender, hook, delivery))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, sender: Sender, hook: Webhook, delivery: Delivery) -> None:
        try:
            settlement = await sender.send(hook, delivery)
        except JobtrackerError as exc:  # the store is down: the lease runs out, it goes again
            log.warning("webhooks: %s", exc.detail)
            return
        finally:
            self._in_flight[hook.webhook_id] -= 1
        self._settled.append(settlement)
        self._on_settled(settlement)
        self.poke()
