"""The Celery app the integration tests run in real worker processes (configured from the
environment the tests start them with)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery import Celery

import jobtracker.celery
from jobtracker.celery import TrackedTask

app = Celery("jobtracker_tests", broker=os.environ.get("TEST_CELERY_BROKER", "memory://"))
app.conf.update(
    task_default_queue=os.environ.get("TEST_CELERY_QUEUE", "celery"),
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
jobtracker.celery.setup(
    app, url=os.environ.get("JOBTRACKER_URL"), api_key=os.environ.get("JOBTRACKER_API_KEY")
)


class TransientError(Exception):
    """A failure worth retrying (the broker, a mail server...)."""


def _owner(*_: Any, owner: str | None = None, **__: Any) -> str | None:
    return owner


def _total(count: int, **_: Any) -> int:
    return count


def _report(task: TrackedTask, count: int, options: dict[str, Any]) -> None:
    """Report rows 1..count; rows in `fail_rows` fail; the options shape each test's attempt."""
    if options.get("pid_file"):
        with open(options["pid_file"], "a") as pids:
            pids.write(f"{os.getpid()}\n")
    fail_rows = set(options.get("fail_rows", ()))
    for n in range(1, count + 1):
        if n == options.get("raise_at"):
            raise ValueError(options["raise_text"])
        if n == count // 2 and task.request.retries < options.get("fail_times", 0):
            raise TransientError(f"attempt {task.request.retries} lost its connection")
        if n in fail_rows or (n == 5 and task.request.retries > 0 and options.get("flip")):
            task.job.row_failed(n, f"r{n}@test", f"Invalid email: r{n}@test")
        else:
            task.job.row_succeeded(n, f"r{n}@uni.edu", internal=n % 3 == 0)
        if options.get("delay"):
            time.sleep(options["delay"])


TASK_OPTIONS: dict[str, Any] = {
    "base": TrackedTask,
    "bind": True,
    "autoretry_for": (TransientError,),
    "default_retry_delay": 0,
    "max_retries": 3,
    "track_total": _total,
    "track_owner": _owner,
    "track_heartbeat_timeout": 5,
}


@app.task(**TASK_OPTIONS)
def report_rows(self: TrackedTask, count: int, owner: str | None = None, **options: Any) -> int:
    """Report `count` rows (early acknowledgement)."""
    _report(self, count, options)
    return count


@app.task(acks_late=True, reject_on_worker_lost=True, **TASK_OPTIONS)
def report_rows_late(
    self: TrackedTask, count: int, owner: str | None = None, **options: Any
) -> int:
    """Report `count` rows, acknowledged only when done: a killed attempt is redelivered."""
    _report(self, count, options)
    return count


def pids(path: str) -> list[int]:
    """The worker processes that started an attempt, in order."""
    file = Path(path)
    return [int(line) for line in file.read_text().split()] if file.exists() else []
