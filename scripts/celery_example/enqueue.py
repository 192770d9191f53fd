"""Enqueue a 500-row task (rows 7 and 300 fail), poll it with the seed's loop, print the final
body as one line of JSON."""

from __future__ import annotations

import json
import os
import sys

import requests
import tasks


def poll_job(job_id: str, api_key: str, base_url: str, interval: float = 0.5,
             max_attempts: int = 600) -> dict:
    """The seed page's loop (its base URL and interval as arguments); the final body."""
    import time

    headers = {"X-API-Key": api_key}
    for _attempt in range(max_attempts):
        data = requests.get(f"{base_url}/jobs/{job_id}", headers=headers, timeout=10).json()
        if data["status"] in ("SUCCESS", "FAILURE"):
            return data
        if data["status"] == "PROGRESS":
            progress = data.get("progress", {})
            print(f" Progress: {progress.get('current', 0)}/{progress.get('total', 0)}",
                  file=sys.stderr)
        time.sleep(interval)
    raise TimeoutError("Job did not complete in time")


def main() -> None:
    rows = [{"email": f"person{n}@uni.edu" if n % 2 else f"person{n}@gmail.com"}
            for n in range(1, 501)]
    rows[6] = {"email": "invalido@test"}
    rows[299] = {"email": "duplicado@test"}
    owner = os.environ["EXAMPLE_OWNER_ID"]
    result = tasks.issue_credentials.apply_async(args=(rows, owner))
    body = poll_job(result.id, os.environ["EXAMPLE_OWNER_KEY"],
                    os.environ["JOBTRACKER_URL"] + "/api/v1")
    print(json.dumps(body, separators=(",", ":")))


if __name__ == "__main__":
    main()
