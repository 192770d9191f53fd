"""Another process reporting rows through the SDK, straight into a store: one row per line read.

For each row number read from stdin it records `row_succeeded`, flushes, and prints `ack N` once
the append is acknowledged. Run as `python other_writer.py STORE_URL KEY JOB_ID`.
"""

from __future__ import annotations

import sys

import jobtracker


def main(url: str, key: str, job_id: str) -> None:
    """Report a row per line of stdin until it closes."""
    with jobtracker.connect(url, api_key=key) as tracker, tracker.job(job_id) as job:
        for line in sys.stdin:
            row = int(line)
            job.row_succeeded(row, f"r{row}@uni.edu", internal=True)
            job.flush()
            print(f"ack {row}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
