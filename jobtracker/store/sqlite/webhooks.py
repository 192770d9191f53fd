"""SQLite's webhook tables (migration 0007): the rules are `store/webhooks.py`'s.

Writes go through the store's one writer, each its own `BEGIN IMMEDIATE` transaction, so servers
sharing the file (`serve --workers N`, or `jobtracker webhooks run` beside a server) take turns:
a cursor moves once, a lease is held by one of them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from jobtracker.domain.webhooks import MAX_SUBSCRIPTIONS, PROGRESS, TERMINAL_TYPES
from jobtracker.store.sqlite.log import SqliteLog
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

T = TypeVar("T")
Run = Callable[[Callable[[SqliteLog], T]], Coroutine[Any, Any, T]]

_HOOK_COLUMNS = "webhook_id, key_id, url, events, labels, secret, created_at, cursor, disabled_at"
_DELIVERY_COLUMNS = (
    "delivery_id, webhook_id, msg_id, job_id, version, type, recorded_at, attempts, first_attempt"
)
_ATTEMPT_COLUMNS = (
    "webhook_id, msg_id, job_id, version, type, attempted_at, status, error, duration_ms, "
    "next_attempt, attempt_id"
)
_DUE = f"""
SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries d
WHERE d.webhook_id = ? AND d.due <= ? AND (d.lease_until IS NULL OR d.lease_until < ?)
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p WHERE p.webhook_id = d.webhook_id
                  AND p.job_id = d.job_id AND p.delivery_id < d.delivery_id)
ORDER BY d.due, d.delivery_id LIMIT ?
"""  # noqa: S608
_LAST_OF_JOB = (
    "SELECT delivery_id, type, attempts, lease_owner FROM webhook_deliveries "
    "WHERE webhook_id = ? AND job_id = ? ORDER BY delivery_id DESC LIMIT 1"
)
_LAST_PROGRESS = """
SELECT max(coalesce((SELECT max(due) FROM webhook_deliveries
                     WHERE webhook_id = ?1 AND job_id = ?2 AND type = ?3), -1e18),
           coalesce((SELECT max(attempted_at) FROM webhook_attempts
                     WHERE webhook_id = ?1 AND job_id = ?2 AND type = ?3), -1e18))
"""
_DROP_HELD = (
    "DELETE FROM webhook_deliveries WHERE webhook_id = ? AND job_id = ? AND type = ? "
    "AND attempts = 0 AND lease_owner IS NULL AND due > ?"
)
_INSERT = (
    "INSERT INTO webhook_deliveries (webhook_id, msg_id, job_id, version, type, recorded_at, due) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def hook_from_row(row: Sequence[Any]) -> Webhook:
    """A `webhooks` row (in `_HOOK_COLUMNS` order) as a `Webhook`."""
    webhook_id, key_id, url, events, labels, secret, created_at, cursor, disabled_at = row
    return Webhook(webhook_id, key_id, url, tuple(orjson.loads(events)), orjson.loads(labels),
                   secret, created_at, int(cursor), disabled_at)


def hook_row(hook: Webhook) -> tuple[Any, ...]:
    """A `Webhook` as a `webhooks` row."""
    return (hook.webhook_id, hook.key_id, hook.url, orjson.dumps(list(hook.events)).decode(),
            orjson.dumps(hook.labels).decode(), hook.secret, hook.created_at, hook.cursor,
            hook.disabled_at)


def _in_write(log: SqliteLog, call: Callable[[sqlite3.Connection], T]) -> T:
    """`call` in a write transaction that commits without waiting for the disk.

    Nothing here needs the fsync an append pays for: every row is derived from the log, which is
    synced. A power cut may undo the newest of these commits (never a process crash: WAL keeps
    what was committed), and undoing one only sends again what it had recorded as sent, or
    queues again a stretch of the log together with its cursor. The next append's sync writes
    these commits to disk too, in order.
    """
    (level,) = log.conn.execute("PRAGMA synchronous").fetchone()
    log.conn.execute("PRAGMA synchronous = NORMAL")
    try:
        log.begin()
        try:
            result = call(log.conn)
        except BaseException:
            log.rollback()
            raise
        log.commit()
    finally:
        log.conn.execute(f"PRAGMA synchronous = {int(level)}")
    return result


def _add(conn: sqlite3.Connection, hook: Webhook) -> None:
    (count,) = conn.execute("SELECT count(*) FROM webhooks WHERE key_id = ?",
                            (hook.key_id,)).fetchone()
    if count >= MAX_SUBSCRIPTIONS:
        raise too_many()
    conn.execute(f"INSERT INTO webhooks ({_HOOK_COLUMNS}) "  # noqa: S608
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", hook_row(hook))


def _delete(conn: sqlite3.Connection, webhook_id: str) -> bool:
    conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
    conn.execute("DELETE FROM webhook_attempts WHERE webhook_id = ?", (webhook_id,))
    return conn.execute("DELETE FROM webhooks WHERE webhook_id = ?", (webhook_id,)).rowcount > 0


def _enqueue(conn: sqlite3.Connection, batches: Sequence[QueueBatch], gap: float) -> None:
    for batch in batches:
        moved = conn.execute(
            "UPDATE webhooks SET cursor = ? WHERE webhook_id = ? AND cursor = ? "
            "AND disabled_at IS NULL", (batch.upto, batch.webhook_id, batch.seen),
        ).rowcount
        if moved:
            for new in batch.deliveries:
                _queue_one(conn, batch.webhook_id, new, gap)


def _queue_one(conn: sqlite3.Connection, webhook_id: str, new: NewDelivery, gap: float) -> None:
    due = new.due
    if new.type == PROGRESS:
        last = conn.execute(_LAST_OF_JOB, (webhook_id, new.job_id)).fetchone()
        if last is not None and last[1] == PROGRESS and last[2] == 0 and last[3] is None:
            conn.execute("UPDATE webhook_deliveries SET version = ?, recorded_at = ? "
                         "WHERE delivery_id = ?", (new.version, new.recorded_at, last[0]))
            return
        (previous,) = conn.execute(_LAST_PROGRESS, (webhook_id, new.job_id, PROGRESS)).fetchone()
        due = max(due, previous + gap)
    elif new.type in TERMINAL_TYPES:
        conn.execute(_DROP_HELD, (webhook_id, new.job_id, PROGRESS, new.due))
    conn.execute(_INSERT, (webhook_id, new.msg_id, new.job_id, new.version, new.type,
                           new.recorded_at, due))


def _due(conn: sqlite3.Connection, wanted: Mapping[str, int], now: float) -> list[Delivery]:
    found: list[Delivery] = []
    for webhook_id, most in wanted.items():
        rows = conn.execute(_DUE, (webhook_id, now, now, most)).fetchall()
        found += [Delivery(*row) for row in rows]
    return found


def _claim(
    conn: sqlite3.Connection, wanted: Mapping[str, int], owner: str, now: float, lease: float
) -> list[Delivery]:
    found = _due(conn, wanted, now)
    conn.executemany(
        "UPDATE webhook_deliveries SET lease_owner = ?, lease_until = ? WHERE delivery_id = ?",
        [(owner, now + lease, d.delivery_id) for d in found],
    )
    return found


def _settle(conn: sqlite3.Connection, owner: str, settlements: Sequence[Settlement]) -> None:
    for s in settlements:
        row = conn.execute("SELECT lease_owner FROM webhook_deliveries WHERE delivery_id = ?",
                           (s.delivery.delivery_id,)).fetchone()
        if row is None or row[0] != owner:
            continue  # our lease ran out and another server took the delivery over
        a = s.attempt
        conn.execute(
            f"INSERT INTO webhook_attempts ({_ATTEMPT_COLUMNS.removesuffix(', attempt_id')}) "  # noqa: S608
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (a.webhook_id, a.msg_id, a.job_id, a.version, a.type, a.attempted_at, a.status,
             a.error, a.duration_ms, a.next_attempt),
        )
        if s.verdict == "retry" and a.next_attempt is not None:
            conn.execute(
                "UPDATE webhook_deliveries SET due = ?, attempts = attempts + 1, "
                "first_attempt = coalesce(first_attempt, ?), lease_owner = NULL, "
                "lease_until = NULL WHERE delivery_id = ?",
                (a.next_attempt, a.attempted_at, s.delivery.delivery_id),
            )
            continue
        conn.execute("DELETE FROM webhook_deliveries WHERE delivery_id = ?",
                     (s.delivery.delivery_id,))
        if s.verdict == "gone":  # nothing more is sent to it: its queue goes too
            conn.execute("UPDATE webhooks SET disabled_at = ? WHERE webhook_id = ?",
                         (iso_time(a.attempted_at), a.webhook_id))
            conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (a.webhook_id,))


class SqliteWebhooks:
    """`WebhookStore` on the SQLite store's writer (`write`) and reader thread (`read`)."""

    def __init__(self, write: Run[Any], read: Run[Any]) -> None:
        self._write = write
        self._read = read

    async def add(self, hook: Webhook) -> None:
        """See `WebhookStore.add`."""
        await self._write(lambda log: _in_write(log, lambda conn: _add(conn, hook)))

    async def get(self, webhook_id: str) -> Webhook | None:
        """See `WebhookStore.get`."""
        rows: list[Any] = await self._read(lambda log: log.conn.execute(
            f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?",  # noqa: S608
            (webhook_id,)).fetchall())
        return hook_from_row(rows[0]) if rows else None

    async def for_key(self, key_id: str) -> list[Webhook]:
        """See `WebhookStore.for_key`."""
        rows: list[Any] = await self._read(lambda log: log.conn.execute(
            f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE key_id = ? "  # noqa: S608
            "ORDER BY created_at, webhook_id", (key_id,)).fetchall())
        return [hook_from_row(row) for row in rows]

    async def delete(self, webhook_id: str) -> bool:
        """See `WebhookStore.delete`."""
        done: bool = await self._write(
            lambda log: _in_write(log, lambda conn: _delete(conn, webhook_id)))
        return done

    async def attempts(self, webhook_id: str, before: int | None, limit: int) -> list[Attempt]:
        """See `WebhookStore.attempts`."""
        rows: list[Any] = await self._read(lambda log: log.conn.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts "  # noqa: S608
            "WHERE webhook_id = ? AND attempt_id < ? ORDER BY attempt_id DESC LIMIT ?",
            (webhook_id, 2**62 if before is None else before, limit)).fetchall())
        return [Attempt(*row) for row in rows]

    async def active(self) -> list[Webhook]:
        """See `WebhookStore.active`."""
        rows: list[Any] = await self._read(lambda log: log.conn.execute(
            f"SELECT {_HOOK_COLUMNS} FROM webhooks "  # noqa: S608
            "WHERE disabled_at IS NULL").fetchall())
        return [hook_from_row(row) for row in rows]

    async def enqueue(self, batches: Sequence[QueueBatch], progress_gap: float) -> None:
        """See `WebhookStore.enqueue`."""
        await self._write(
            lambda log: _in_write(log, lambda conn: _enqueue(conn, batches, progress_gap)))

    async def claim(
        self, wanted: Mapping[str, int], owner: str, now: float, lease: float
    ) -> list[Delivery]:
        """See `WebhookStore.claim`: a read first, so an idle poll takes no write lock."""
        if not wanted:
            return []
        seen: list[Delivery] = await self._read(lambda log: _due(log.conn, wanted, now))
        if not seen:
            return []
        claimed: list[Delivery] = await self._write(
            lambda log: _in_write(log, lambda conn: _claim(conn, wanted, owner, now, lease)))
        return claimed

    async def step(self, owner: str, work: StepWork) -> list[Delivery]:
        """See `WebhookStore.step`: one write transaction, none when there is nothing to do."""
        if not work.writes:
            return await self.claim(work.wanted, owner, work.now, work.lease)

        def write(conn: sqlite3.Connection) -> list[Delivery]:
            _settle(conn, owner, work.settlements)
            _enqueue(conn, work.batches, work.progress_gap)
            return _claim(conn, work.wanted, owner, work.now, work.lease)

        claimed: list[Delivery] = await self._write(lambda log: _in_write(log, write))
        return claimed

    async def settle(self, owner: str, settlements: Sequence[Settlement]) -> None:
        """See `WebhookStore.settle`."""
        if settlements:
            await self._write(
                lambda log: _in_write(log, lambda conn: _settle(conn, owner, settlements)))
