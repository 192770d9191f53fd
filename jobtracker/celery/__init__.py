"""Celery integration (the `jobtracker[celery]` extra): a tracked task in three lines.

    app = Celery("billing", broker="redis://...")
    jobtracker.celery.setup(app, url="http://127.0.0.1:8080", api_key=WORKER_KEY)

    @app.task(base=TrackedTask, bind=True, track_total=len)
    def issue_credentials(self, rows):
        for n, row in enumerate(rows, 1):
            self.job.row_succeeded(n, row["email"], internal=True)

The job id is the Celery task id; the job is created when the task is published.
"""

from __future__ import annotations

from jobtracker.celery.config import setup
from jobtracker.celery.task import TrackedTask

__all__ = ["TrackedTask", "setup"]
