"""What must hold after a writer is killed: every acknowledged row is in the log, the batch being
written is all there or not there at all, and `replay --verify` finds the projection exact."""

from __future__ import annotations

import asyncio

import attrs

from jobtracker.domain.events import RecordedEvent, RowFailed, RowSucceeded
from jobtracker.domain.projection import replay
from jobtracker.store import Store, make_store
from jobtracker.store.rebuild import Rebuildable
from jobtracker.store.replay import describe, verify


@attrs.define
class WriterLedger:
    """What a writer said before it died: batches begun and batches acknowledged."""

    begun: list[tuple[int, int]] = attrs.field(factory=list)
    acked: list[tuple[int, int]] = attrs.field(factory=list)

    def read(self, lines: str) -> None:
        """Parse `begin FIRST COUNT` / `ack FIRST COUNT` lines (a torn last line is ignored)."""
        for line in lines.splitlines():
            word, *numbers = line.split()
            if len(numbers) != 2 or not all(n.isdigit() for n in numbers):
                continue
            pair = (int(numbers[0]), int(numbers[1]))
            (self.begun if word == "begin" else self.acked).append(pair)


def check_after_kill(store_url: str, job_id: str, ledger: WriterLedger) -> int:
    """Assert the crash invariants on the store; return how many rows are in the log."""
    return asyncio.run(_check(store_url, job_id, ledger))


async def _check(store_url: str, job_id: str, ledger: WriterLedger) -> int:
    store = make_store(store_url)
    await store.open()
    try:
        history = [e.event for e in await _history(store, job_id)]
        rows = {e.row for e in history if isinstance(e, RowSucceeded | RowFailed)}
        for first, count in ledger.acked:
            missing = set(range(first, first + count)) - rows
            assert not missing, f"acknowledged rows lost: {sorted(missing)[:5]}"
        for first, count in ledger.begun:
            present = len(set(range(first, first + count)) & rows)
            assert present in (0, count), f"batch at row {first} is partly written"
        view = await store.get_job(job_id, 0)
        assert view is not None
        assert view.state == replay(job_id, history).state, "projection differs from replay"
        assert isinstance(store, Rebuildable), f"{store_url}: replay --verify is not available"
        report = await verify(store)
        assert report.comparison is not None
        assert report.comparison.differing == 0, describe(report.comparison.diffs[0])
        return len(rows)
    finally:
        await store.close()


async def _history(store: Store, job_id: str) -> list[RecordedEvent]:
    events: list[RecordedEvent] = []
    while page := await store.read_job_events(job_id, events[-1].version if events else 0, 5000):
        events += page
    return events
