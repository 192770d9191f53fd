"""SQLite keeps the webhook tables in a file of their own: the dispatcher's many small writes
never hold the log's write lock, so an append never waits behind a delivery's bookkeeping (nor
behind a low-priority dispatcher descheduled in the middle of one)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from jobtracker.domain.events import Created, NewEvent, Started, new_event_id
from jobtracker.store import SqliteStore
from jobtracker.store.webhooks import NewDelivery, QueueBatch, StepWork, Webhook


def _hook() -> Webhook:
    return Webhook("wh_1", "key_owner", "https://example.com/hook", ("job.started",), {},
                   "whsec_c2VjcmV0", "2026-12-05T00:00:00.000Z", 0)


async def test_webhook_writes_go_on_while_another_process_holds_the_logs_write_lock(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "jobs.db"))
    await store.open()
    blocker = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # the log's one write lock, held by someone else
        began = time.monotonic()
        await store.webhooks.add(_hook())
        work = StepWork((), (QueueBatch("wh_1", 0, 2, (
            NewDelivery("msg_1", "job-1", 2, "job.started", "2026-12-05T00:00:01.000Z", 0.0),
        )),), 5.0, {"wh_1": 10}, time.time(), 20.0)
        claimed = await asyncio.wait_for(store.webhooks.step("me", work), 5)
        assert time.monotonic() - began < 1.0
        assert [d.msg_id for d in claimed] == ["msg_1"]
        assert (tmp_path / "jobs.db-webhooks").exists()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await store.close()


async def test_appends_go_on_while_another_process_holds_the_webhook_files_write_lock(
    tmp_path: Path,
) -> None:
    store = SqliteStore(str(tmp_path / "jobs.db"))
    await store.open()
    await store.create_job("job-1", Created(owner="key_owner"))
    blocker = sqlite3.connect(tmp_path / "jobs.db-webhooks", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        result = await asyncio.wait_for(
            store.append("job-1", [NewEvent(new_event_id(), Started())]), 5
        )
        assert result.version == 2
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await store.close()
