"""A worker process for the load test: the SDK reporting rows at full speed for a while.

Prints the number of rows it reported once its job block has closed (everything flushed).
"""

from __future__ import annotations

import sys
import time

import jobtracker


def main(url: str, key: str, job_id: str, seconds: float) -> None:
    """Report rows (each with its e-mail) until `seconds` pass, then succeed."""
    deadline = time.monotonic() + seconds
    rows = 0
    with jobtracker.connect(url, api_key=key) as tracker, tracker.job(job_id) as job:
        job.started()
        while time.monotonic() < deadline:
            for _ in range(100):
                job.row_succeeded(rows, f"p{rows}@uni.edu", internal=rows % 3 == 0)
                job.email_sent(rows, f"p{rows}@uni.edu")
                rows += 1
            job.progress(rows, rows)
        job.succeeded()
    print(rows, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))
