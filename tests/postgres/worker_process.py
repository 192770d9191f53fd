"""A plain worker process for the multi-process test: reports rows straight into the store.

Usage: python -m tests.postgres.worker_process STORE_URL JOB_ID FIRST_ROW COUNT
Rows divisible by 7 fail; every row's e-mail is sent; events go in batches of 5.
"""

from __future__ import annotations

import asyncio
import sys

from jobtracker.domain.events import EmailSent, NewEvent, RowFailed, RowSucceeded
from jobtracker.store.postgres import PostgresStore


def row_events(row: int) -> list[NewEvent]:
    """The events one row produces."""
    email = f"r{row}@uni.edu"
    if row % 7 == 0:
        outcome = NewEvent(f"row-{row}", RowFailed(row, email, f"Invalid email: {email}"))
        return [outcome]
    outcome = NewEvent(f"row-{row}", RowSucceeded(row, email, internal=row % 2 == 0))
    return [outcome, NewEvent(f"mail-{row}", EmailSent(row, email))]


async def report(url: str, job_id: str, first: int, count: int) -> None:
    """Append this worker's rows, five at a time."""
    store = PostgresStore(url, pool_size=2)
    await store.open()
    try:
        for start in range(first, first + count, 5):
            last = min(start + 5, first + count)
            batch = [event for row in range(start, last) for event in row_events(row)]
            await store.append(job_id, batch)
    finally:
        await store.close()


if __name__ == "__main__":
    url, job_id, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    asyncio.run(report(url, job_id, first, count))
