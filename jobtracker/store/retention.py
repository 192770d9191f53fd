"""Retention on any store: prune batch after batch until nothing due is left.

One function for `jobtracker prune`, `serve --retention` (`server/inventory.Retention`) and the
benchmarks; each store's `prune` is one short transaction per batch.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from jobtracker.domain import listing
from jobtracker.store.base import Store


async def prune_all(
    store: Store, finished_before: dt.datetime, batch: int, pause: float = 0.0
) -> tuple[int, int]:
    """Prune batch after batch until nothing finished before the cutoff is left, then the webhook
    attempts made before it; return the jobs and events removed. `pause` seconds between
    batches let appends in."""
    cutoff = listing.log_time(finished_before)
    jobs = events = 0
    while (done := await store.prune(cutoff, batch)).jobs:
        jobs, events = jobs + done.jobs, events + done.events
        if pause:
            await asyncio.sleep(pause)
    # Webhook attempts (the deliveries log of `GET /api/v1/webhooks/{id}/deliveries`) older than
    # the cutoff go too: one row per try, they would otherwise grow for ever.
    while await store.webhooks.prune_attempts(finished_before.timestamp(), batch) == batch:
        if pause:
            await asyncio.sleep(pause)
    return jobs, events
