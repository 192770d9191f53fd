"""SQLite's webhook tables, in a file of their own: the rules are `store/webhooks.py`'s.

The dispatcher writes many times a second (queue, claim, settle). In the log's own file each of
those writes would hold SQLite's one write lock, which every append needs: appends would wait
behind them, and a dispatcher run at low priority may be descheduled while it holds the lock.
So the tables live beside the log, in `<database>-webhooks` (migrations/sqlite-webhooks), which
has a write lock of its own; the log is only ever read here.

Writes are `BEGIN IMMEDIATE` transactions on the webhook file, so processes sharing it
(`serve --workers N`, `jobtracker webhooks run` beside a server) take turns: a cursor moves once,
a lease is held by one of them. They commit with `synchronous = NORMAL`: everything here but
the subscriptions is derived from the log, a power cut may undo only the newest commits, and
undoing one sends again (under the same webhook-id, which is derived from the event) what it
had recorded as sent, or queues again a stretch of the log with its cursor.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson

from jobtracker.domain.errors import StoreUnavailable
from jobtracker.domain.webhooks import MAX_SUBSCRIPTIONS, PROGRESS, TERMINAL_TYPES
from jobtracker.store.migrate import migrate_sqlite
from jobtracker.store.sqlite.log import connect, translated
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

# The oldest attempts by id (the primary key's order, no scan past `limit` rows), of which those
# made before the cutoff go.
_PRUNE_ATTEMPTS = (
    "DELETE FROM webhook_attempts WHERE attempt_id IN (SELECT attempt_id FROM "
    "(SELECT attempt_id, attempted_at FROM webhook_attempts ORDER BY attempt_id LIMIT ?) "
    "WHERE attempted_at < ?)"
)

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


def webhooks_path(path: str) -> str:
    """The webhook tables' file beside the log's database file."""
    return path if path == ":memory:" else f"{path}-webhooks"


class _File:
    """The webhook file's one connection, used only from its one thread."""

    def __init__(self, path: str) -> None:
        self.conn = connect(path)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        migrate_sqlite(self.conn, "sqlite-webhooks")


def _in_write(file: _File, call: Callable[[sqlite3.Connection], T]) -> T:
    """`call` in a write transaction of the webhook file."""
    file.conn.execute("BEGIN IMMEDIATE")
    try:
        result = call(file.conn)
    except BaseException:
        if file.conn.in_transaction:
            file.conn.execute("ROLLBACK")
        raise
    file.conn.execute("COMMIT")
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
    """`WebhookStore` on the webhook file beside a SQLite store's log, on a thread of its own."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool: ThreadPoolExecutor | None = None
        self._file: _File | None = None

    async def open(self) -> None:
        """Open (creating and migrating) the webhook file."""
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="jobtracker-sqlite-webhooks")
        self._file = await self._on_thread(lambda: _File(self.path))

    async def close(self) -> None:
        """Close the connection and stop the thread; closing twice is harmless."""
        pool, file, self._pool, self._file = self._pool, self._file, None, None
        if pool is not None:
            if file is not None:
                await asyncio.get_running_loop().run_in_executor(pool, file.conn.close)
            pool.shutdown(wait=True)

    async def _on_thread(self, call: Callable[[], T]) -> T:
        if self._pool is None:
            raise StoreUnavailable("The SQLite store is not open")
        pool = self._pool
        return await asyncio.get_running_loop().run_in_executor(pool, translated, call)

    async def _run(self, call: Callable[[_File], T]) -> T:
        def on_file() -> T:
            if self._file is None:
                raise StoreUnavailable("The SQLite store is not open")
            return call(self._file)

        return await self._on_thread(on_file)

    async def add(self, hook: Webhook) -> None:
        """See `WebhookStore.add`."""
        await self._run(lambda file: _in_write(file, lambda conn: _add(conn, hook)))

    async def get(self, webhook_id: str) -> Webhook | None:
        """See `WebhookStore.get`."""
        rows: list[Any] = await self._run(lambda file: file.conn.execute(
            f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE webhook_id = ?",  # noqa: S608
            (webhook_id,)).fetchall())
        return hook_from_row(rows[0]) if rows else None

    async def for_key(self, key_id: str) -> list[Webhook]:
        """See `WebhookStore.for_key`."""
        rows: list[Any] = await self._run(lambda file: file.conn.execute(
            f"SELECT {_HOOK_COLUMNS} FROM webhooks WHERE key_id = ? "  # noqa: S608
            "ORDER BY created_at, webhook_id", (key_id,)).fetchall())
        return [hook_from_row(row) for row in rows]

    async def delete(self, webhook_id: str) -> bool:
        """See `WebhookStore.delete`."""
        done: bool = await self._run(
            lambda file: _in_write(file, lambda conn: _delete(conn, webhook_id)))
        return done

    async def attempts(self, webhook_id: str, before: int | None, limit: int) -> list[Attempt]:
        """See `WebhookStore.attempts`."""
        rows: list[Any] = await self._run(lambda file: file.conn.execute(
            f"SELECT {_ATTEMPT_COLUMNS} FROM webhook_attempts "  # noqa: S608
            "WHERE webhook_id = ? AND attempt_id < ? ORDER BY attempt_id DESC LIMIT ?",
            (webhook_id, 2**62 if before is None else before, limit)).fetchall())
        return [Attempt(*row) for row in rows]

    async def prune_attempts(self, before: float, limit: int) -> int:
        """See `WebhookStore.prune_attempts`."""
        gone: int = await self._run(lambda file: _in_write(file, lambda conn: conn.execute(
            _PRUNE_ATTEMPTS, (limit, before)).rowcount))
        return gone

    async def active(self) -> list[Webhook]:
        """See `WebhookStore.active`."""
        rows: list[Any] = await self._run(lambda file: file.conn.execute(
            f"SELECT {_HOOK_COLUMNS} FROM webhooks "  # noqa: S608
            "WHERE disabled_at IS NULL").fetchall())
        return [hook_from_row(row) for row in rows]

    async def enqueue(self, batches: Sequence[QueueBatch], progress_gap: float) -> None:
        """See `WebhookStore.enqueue`."""
        await self._run(
            lambda file: _in_write(file, lambda conn: _enqueue(conn, batches, progress_gap)))

    async def claim(
        self, wanted: Mapping[str, int], owner: str, now: float, lease: float
    ) -> list[Delivery]:
        """See `WebhookStore.claim`: a read first, so an idle poll takes no write lock."""
        if not wanted:
            return []
        seen: list[Delivery] = await self._run(lambda file: _due(file.conn, wanted, now))
        if not seen:
            return []
        claimed: list[Delivery] = await self._run(
            lambda file: _in_write(file, lambda conn: _claim(conn, wanted, owner, now, lease)))
        return claimed

    async def step(self, owner: str, work: StepWork) -> list[Delivery]:
        """See `WebhookStore.step`: one write transaction, none when there is nothing to do."""
        if not work.writes:
            return await self.claim(work.wanted, owner, work.now, work.lease)

        def write(conn: sqlite3.Connection) -> list[Delivery]:
            _settle(conn, owner, work.settlements)
            _enqueue(conn, work.batches, work.progress_gap)
            return _claim(conn, work.wanted, owner, work.now, work.lease)

        claimed: list[Delivery] = await self._run(lambda file: _in_write(file, write))
        return claimed

    async def settle(self, owner: str, settlements: Sequence[Settlement]) -> None:
        """See `WebhookStore.settle`."""
        if settlements:
            await self._run(
                lambda file: _in_write(file, lambda conn: _settle(conn, owner, settlements)))
