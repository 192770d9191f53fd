"""A worker process for the crash tests: the SDK writing (into a store or a server) until killed.

Before each flush it prints `begin FIRST COUNT`, after the flush returned `ack FIRST COUNT`: the
rows FIRST .. FIRST+COUNT-1 of that batch are then acknowledged.
"""

from __future__ import annotations

import random
import sys

import jobtracker


def main(url: str, job_id: str, first_row: int, seed: int, key: str | None = None) -> None:
    """Report batches of rows forever (over HTTP when `url` is a server and `key` is given)."""
    rng = random.Random(seed)
    row = first_row
    options = {"api_key": key, "batch_size": 10**6, "max_delay": 3600}
    with jobtracker.connect(url, **options) as tracker, tracker.job(job_id) as job:
        while True:
            count = rng.randint(1, 40)
            print(f"begin {row} {count}", flush=True)
            for n in range(row, row + count):
                if rng.random() < 0.2:
                    job.row_failed(n, f"r{n}@test", "Invalid email")
                else:
                    job.row_succeeded(n, f"r{n}@uni.edu", internal=rng.random() < 0.5)
            job.flush()
            print(f"ack {row} {count}", flush=True)
            row += count


if __name__ == "__main__":
    key = sys.argv[5] if len(sys.argv) > 5 else None
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), key)
