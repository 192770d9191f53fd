"""The Celery app the `celery-rows` benchmark runs in a real worker (configured from the
environment): the same 1 ms-per-row task, tracked through the integration and not at all."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import jobtracker.celery
from jobtracker.celery import TrackedTask

app = Celery(
    "jobtracker_bench",
    broker=os.environ.get("BENCH_CELERY_BROKER", "memory://"),
    backend=os.environ.get("BENCH_CELERY_BROKER"),
)
app.conf.update(task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "celery"),
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
jobtracker.celery.setup(app, url=os.environ.get("JOBTRACKER_URL"),
                        api_key=os.environ.get("JOBTRACKER_API_KEY"))


def _work() -> None:
    time.sleep(0.001)


@app.task(base=TrackedTask, bind=True, track_total=lambda rows: rows)
def tracked_rows(self: TrackedTask, rows: int) -> int:
    """`rows` rows of 1 ms each, every one reported."""
    for n in range(1, rows + 1):
        _work()
        self.job.row_succeeded(n, f"r{n}@uni.edu", internal=n % 2 == 0)
    return rows


@app.task
def plain_rows(rows: int, **_: Any) -> int:
    """The same rows, reported nowhere."""
    for _n in range(1, rows + 1):
        _work()
    return rows
