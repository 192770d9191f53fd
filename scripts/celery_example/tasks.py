"""The example's Celery app and its one tracked task: issue credentials to a list of rows."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

import jobtracker.celery
from jobtracker.celery import TrackedTask

app = Celery("celery_example", broker=os.environ.get(
    "JOBTRACKER_CELERY_BROKER", "redis://127.0.0.1:6379/14"))
app.conf.update(task_default_queue=os.environ.get("EXAMPLE_QUEUE", "celery_example"),
                broker_connection_retry_on_startup=True)
jobtracker.celery.setup(app, url=os.environ["JOBTRACKER_URL"],
                        api_key=os.environ["JOBTRACKER_API_KEY"])


@app.task(base=TrackedTask, bind=True, acks_late=True, track_total=lambda rows, owner: len(rows),
          track_owner=lambda rows, owner: owner)
def issue_credentials(self: TrackedTask, rows: list[dict[str, Any]], owner: str) -> None:
    """Issue each row its credential; a row without a valid e-mail fails."""
    for n, row in enumerate(rows, 1):
        time.sleep(0.002)
        if row["email"].endswith("@test"):
            self.job.row_failed(n, row["email"], f"Invalid email: {row['email']}")
            continue
        self.job.row_succeeded(n, row["email"], internal=row["email"].endswith("@uni.edu"))
        self.job.email_sent(n, row["email"])
