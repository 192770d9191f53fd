"""PostgreSQL's webhook tables (migration 0008): the rules are `store/webhooks.py`'s.

Several servers on one database share the queue: a claim locks the rows it takes with
`FOR UPDATE SKIP LOCKED` and leases them (`lease_owner`, `lease_until`), so each delivery is
sent by one server at a time, and a dead server's leases run out for another to take over. A
cursor moves only from where its mover read it (`WHERE cursor = $seen`), so two servers reading
the same stretch of the log queue it once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import asyncpg
import orjson

from jobtracker.domain.webhooks import MAX_SUBSCRIPTIONS, PROGRESS, TERMINAL_TYPES
from jobtracker.store.postgres.driver import driver_errors
from jobtracker.store.postgres.plan import Conn
from jobtracker.store.webhooks import (
    Attempt,
    Delivery,
    NewDelivery,
    QueueBatch,
    Settlement,
    StepWork,
    Webhook,
    iso_time,
    too_many,
)

# As on SQLite (store/sqlite/webhooks.py): the `limit` oldest by id, those made before the cutoff.
_PRUNE_ATTEMPTS = (
    "DELETE FROM webhook_attempts WHERE attempt_id IN (SELECT attempt_id FROM "
    "(SELECT attempt_id, attempted_at FROM webhook_attempts ORDER BY attempt_id LIMIT $1) AS o "
    "WHERE attempted_at < $2)"
)
_HOOK_COLUMNS = "webhook_id, key_id, url, events, labels, secret, created_at, cursor, disabled_at"
_DELIVERY_COLUMNS = (
    "delivery_id, webhook_id, msg_id, job_id, version, type, recorded_at, attempts, first_attempt"
)
_ATTEMPT_COLUMNS = (
    "webhook_id, msg_id, job_id, version, type, attempted_at, status, error, duration_ms, "
    "next_attempt"
)
_CLAIM = f"""
WITH picked AS (
    SELECT d.delivery_id FROM webhook_deliveries d
    WHERE d.webhook_id = $1 AND d.due <= $2 AND (d.lease_until IS NULL OR d.lease_until < $2)
      AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.webhook_id = d.webhook_id
                      AND p.job_id = d.job_id AND p.delivery_id < d.delivery_id)
    ORDER BY d.due, d.delivery_id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d SET lease_owner = $4, lease_until = $5
FROM picked WHERE d.delivery_id = picked.delivery_id
RETURNING {", ".join("d." + c for c in _DELIVERY_COLUMNS.split(", "))}
"""  # noqa: S608
_LAST_OF_JOB = (
    "SELECT delivery_id, type, attempts, lease_owner FROM webhook_deliveries "
    "WHERE webhook_id = $1 AND job_id = $2 ORDER BY delivery_id DESC LIMIT 1"
)
_LAST_PROGRESS = """
SELECT greatest(
    (SELECT max(due) FROM webhook_deliveries WHERE webhook_id = $1 AND job_id = $2 AND type = $3),
    (SELECT max(attempted_at) FROM webhook_attempts
     WHERE webhook_id = $1 AND job_id = $2 AND type = $3))
"""
_DROP_HELD = (
    "DELETE FROM webhook_deliveries WHERE webhook_id = $1 AND job_id = $2 AND type = $3 "
    "AND attempts = 0 AND lease_owner IS NULL AND due > $4"
)
_INSERT = (
    "INSERT INTO webhook_deliveries (webhook_id, msg_id, job_id, version, type, recorded_at, due) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7)"
)
#: The transaction-scoped advisory lock (with the key's hash) that counts a key's subscriptions.
_ADD_LOCK = 0x77686F6F6B


def _hook(row: asyncpg.Record) -> Webhook:
    webhook_id, key_id, url, events, labels, secret, created_at, cursor, disabled_at = row
    return Webhook(webhook_id, key_id, url, tuple(orjson.loads(events)), orjson.loads(labels),
                   secret, created_at, int(cursor), disabled_at)


async def _queue_one(conn: Conn, webhook_id: str, new: NewDelivery, gap: float) -> None:
    due = new.due
    if new.type == PROGRESS:
        last = await conn.fetchrow(_LAST_OF_JOB, webhook_id, new.job_id)
        if last is not None and last[1] == PROGRESS and last[2] == 0 and last[3] is None:
            await conn.execute("UPDATE webhook_deliveries SET version = $1, recorded_at = $2 "
                               "WHERE delivery_id = $3", new.version, new.recorded_at, last[0])
            return
        previous = await conn.fetchval(_LAST_PROGRESS, webhook_id, new.job_id, PROGRESS)
        if previous is not None:
            due = max(due, previous + gap)
    elif new.type in TERMINAL_TYPES:
        await conn.execute(_DROP_HELD, webhook_id, new.job_id, PROGRESS, new.due)
    await conn.execute(_INSERT, webhook_id, new.msg_id, new.job_id, new.version, new.type,
                       new.recorded_at, due)


async def _enqueue(conn: Conn, batches: Sequence[QueueBatch], gap: float) -> None:
    for batch in batches:
        moved = await conn.execute(
            "UPDATE webhooks SET cursor = $1 WHERE webhook_id = $2 AND cursor = $3 "
            "AND disabled_at IS NULL", batch.upto, batch.webhook_id, batch.seen,
        )
        if moved != "UPDATE 0":
            for new in batch.deliveries:
                await _queue_one(conn, batch.webhook_id, new, gap)


async def _settle_one(conn: Conn, owner: str, s: Settlement) -> None:
    holder = await conn.fetchval(
        "SELECT lease_owner FROM webhook_deliveries WHERE delivery_id = $1 FOR UPDATE",
        s.delivery.delivery_id,
    )
    if holder != owner:
        return  # our lease ran out and another server took the delivery over
    a = s.attempt
    await conn.execute(
        f"INSERT INTO webhook_attempts ({_ATTEMPT_COLUMNS}) "  # noqa: S608
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        a.webhook_id, a.msg_id, a.job_id, a.version, a.type, a.attempted_at, a.status, a.error,
        a.duration_ms, a.next_attempt,
    )
    if s.verdict == "retry" and a.next_attempt is not None:
        await conn.execute(
            "UPDATE webhook_deliveries SET due = $1, attempts = attempts + 1, "
            "first_attempt = coalesce(first_attempt, $2), lease_owner = NULL, "
            "lease_until = NULL WHERE delivery_id = $3",
            a.next_attempt, a.attempted_at, s.delivery.delivery_id,
        )
        return
    await conn.execute("DELETE FROM webhook_deliveries WHERE delivery_id = $1",
                       s.delivery.delivery_id)
    if s.verdict == "gone":  # nothing more is sent to it: its queue goes too
        await conn.execute("UPDATE webhooks SET disabled_at = $1 WHERE webhook_id = $2",
                           iso_time(a.attempted_at), a.webhook_id)
        await conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = $1", a.webhook_id)


class PostgresWebhooks:
    """`WebhookStore` on the PostgreSQL store's pool."""

    def __init__(self, pool: Callable[[], asyncpg.Pool]) -> None:
        self._pool = pool

    async def _fetch(self, where: str, query: str, *args: Any) -> list[asyncpg.Record]:
        async with driver_errors(where):
            rows: list[asyncpg.Record] = await self._pool().fetch(query, *args)
            return rows

    async def add(self, hook: Webhook) -> None:
        """See `WebhookStore.add`."""
        async with driver_errors("adding a webhook"), self._pool().acquire() as conn, \
                conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                               _ADD_LOCK & 0x7FFFFFFF, hook.key_id)
            count = await conn.fetchval("SELECT count(*) FROM webhooks WHERE key_id = $1",
                                        hook.key_id)
            if count >= MAX_SUBSCRIPTIONS:
                raise too_many()
            await conn.execute(
                f"INSERT INTO webhooks ({_HOOK_COLUMNS}) "  # noqa: S608
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                hook.webhook_id, hook.key_id, hook.url, orjson.dumps(list(hook.events)).decode(),
                orjson.dumps(hook.labels).decode(), hook.secret, hook.created_at, hook.cursor,
                hook.disabled_at,
            )

    async def get(self, webhook_id: str) -> Webhook | None:
        """See `WebhookStore.get`."""
        rows = await self._fetch("reading a webhook", f"SELECT {_HOOK_COLUMNS} FROM webhooks "  # noqa: S608
                                 "WHERE webhook_id = $1", webhook_id)
        return _hook(rows[0]) if rows else None

    async def for_key(self, key_id: str) -> list[Webhook]:
        """See `WebhookStore.for_key`."""
        rows = await self._fetch("listing webhooks", f"SELECT {_HOOK_COLUMNS} FROM webhooks "  # noqa: S608
                                 "WHERE key_id = $1 ORDER BY created_at, webhook_id", key_id)
        return [_hook(row) for row in rows]

    async def delete(self, webhook_id: str) -> bool:
        """See `WebhookStore.delete`."""
        async with driver_errors("deleting a webhook"), self._pool().acquire() as conn, \
                conn.transaction():
            await conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = $1", webhook_id)
            await conn.execute("DELETE FROM webhook_attempts WHERE webhook_id = $1", webhook_id)
            status = await conn.execute("DELETE FROM webhooks WHERE webhook_id = $1", webhook_id)
        return bool(status != "DELETE 0")

    async def attempts(self, webhook_id: str, before: int | None, limit: int) -> list[Attempt]:
        """See `WebhookStore.attempts`."""
        rows = await self._fetch(
            "reading webhook attempts",
            f"SELECT {_ATTEMPT_COLUMNS}, attempt_id FROM webhook_attempts "  # noqa: S608
            "WHERE webhook_id = $1 AND attempt_id < $2 ORDER BY attempt_id DESC LIMIT $3",
            webhook_id, 2**62 if before is None else before, limit,
        )
        return [Attempt(*row) for row in rows]

    async def prune_attempts(self, before: float, limit: int) -> int:
        """See `WebhookStore.prune_attempts`."""
        async with driver_errors("pruning webhook attempts"), self._pool().acquire() as conn:
            status = await conn.execute(_PRUNE_ATTEMPTS, limit, before)
        return int(status.split()[-1])

    async def active(self) -> list[Webhook]:
        """See `WebhookStore.active`."""
        rows = await self._fetch("reading webhooks", f"SELECT {_HOOK_COLUMNS} FROM webhooks "  # noqa: S608
                                 "WHERE disabled_at IS NULL")
        return [_hook(row) for row in rows]

    async def enqueue(self, batches: Sequence[QueueBatch], progress_gap: float) -> None:
        """See `WebhookStore.enqueue`."""
        async with driver_errors("queuing webhook deliveries"), self._pool().acquire() as conn, \
                conn.transaction():
            await _enqueue(conn, batches, progress_gap)

    async def claim(
        self, wanted: Mapping[str, int], owner: str, now: float, lease: float
    ) -> list[Delivery]:
        """See `WebhookStore.claim`."""
        if not wanted:
            return []
        found: list[Delivery] = []
        async with driver_errors("claiming webhook deliveries"), \
                self._pool().acquire() as conn, conn.transaction():
            for webhook_id, most in wanted.items():
                rows = await conn.fetch(_CLAIM, webhook_id, now, most, owner, now + lease)
                found += [Delivery(*row) for row in rows]
        return found

    async def step(self, owner: str, work: StepWork) -> list[Delivery]:
        """See `WebhookStore.step`: one transaction."""
        found: list[Delivery] = []
        async with driver_errors("delivering webhooks"), self._pool().acquire() as conn, \
                conn.transaction():
            for s in work.settlements:
                await _settle_one(conn, owner, s)
            await _enqueue(conn, work.batches, work.progress_gap)
            for webhook_id, most in work.wanted.items():
                rows = await conn.fetch(_CLAIM, webhook_id, work.now, most, owner,
                                        work.now + work.lease)
                found += [Delivery(*row) for row in rows]
        return found

    async def settle(self, owner: str, settlements: Sequence[Settlement]) -> None:
        """See `WebhookStore.settle`."""
        if not settlements:
            return
        async with driver_errors("recording webhook attempts"), \
                self._pool().acquire() as conn, conn.transaction():
            for s in settlements:
                await _settle_one(conn, owner, s)
