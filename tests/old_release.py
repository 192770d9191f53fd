"""A store written by the release before the lean log, and what its API answered.

`release_tree` unpacks that release (the parent of the commit that added the lean log's
migration: 0007 on SQLite, 0010 on PostgreSQL) from git; `python tests/old_release.py TREE STORE
OUT` runs it, writes jobs of every kind through its HTTP API, and saves the bodies of `PATHS` as
it answered them. STORE is a SQLite file's path or a PostgreSQL URL. `answers` asks the same of
whatever `jobtracker` is imported: the test compares the two byte for byte after migrating.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

LEAN_MIGRATION = "migrations/sqlite/0007_lean_log.sql"
PG_LEAN_MIGRATION = "migrations/postgres/0010_lean_log.sql"
UUID = "0190f2a8-7c4e-7b1a-9d3e-5f6a7b8c9d0e"
#: Job b's events, left running: a canonical UUID id and a client's own.
B_EVENTS = [{"type": "started", "event_id": "0190f2a8-7c4e-7b1a-9d3e-000000000001"},
            {"type": "progress", "current": 1, "total": 9, "event_id": "p-b"}]

#: Every body compared: jobs, histories (whole and paged), row errors, listings.
PATHS = [
    *(f"/api/v1/jobs/{job}{tail}"
      for job in ("a", "b", "c", "d", "many")
      for tail in ("", "/events", "/events?limit=2", "/events?limit=3&after_version=2",
                   "/errors")),
    "/api/v1/jobs", "/api/v1/jobs?limit=2", "/api/v1/jobs?label=team:x",
    "/api/v1/jobs?status=SUCCESS", "/api/v1/jobs?label=team:x&label=env:prod",
]


def release_tree(root: Path, into: Path, migration: str = LEAN_MIGRATION) -> Path | None:
    """The previous release's `jobtracker` package and migrations under `into`; None without git
    or without the history."""
    try:
        added = subprocess.run(
            ["git", "log", "-1", "--format=%H", "--diff-filter=A", "--", migration],
            cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        if not added:
            return None  # a copy without the history that added the lean log
        archive = subprocess.run(["git", "archive", f"{added}^", "jobtracker", "migrations"],
                                 cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _jobs() -> list[tuple[dict[str, Any], list[dict[str, Any]], str | None]]:
    """(creation body, events, then `cancel` or None) for each job written."""
    row = {"type": "row_succeeded", "internal": True}
    many = [{**row, "row": n, "email": f"r{n}@uni.edu", "event_id": f"m-{n}"} for n in range(40)]
    return [
        ({"job_id": "a", "total": 5, "label": "batch a", "labels": {"team": "x", "env": "prod"}},
         [{"type": "started", "event_id": "s-a"},
          {**row, "row": 0, "email": "r0@uni.edu", "event_id": UUID.upper()},
          {"type": "row_failed", "row": 1, "email": "r1@uni.edu", "error": "Bad e-mail",
           "event_id": UUID},
          {"type": "email_sent", "row": 0, "email": "r0@uni.edu"},
          {"type": "email_failed", "row": 1, "email": "r1@uni.edu", "error": "bounced"},
          {"type": "progress", "current": 2, "total": 5, "status": "half way"},
          {"type": "succeeded"}], None),
        ({"job_id": "b", "heartbeat_timeout": 3600, "timeout": 86400, "labels": {"team": "x"}},
         B_EVENTS, None),
        ({"job_id": "c"}, [{"type": "failed", "error": "out of credits"}], None),
        ({"job_id": "d", "total": 3}, [{"type": "started"}], "cancel"),
        ({"job_id": "many", "total": 40}, [*many, {"type": "succeeded"}], None),
    ]


async def _client(url: str) -> Any:
    from aiohttp.test_utils import TestClient, TestServer

    from jobtracker.server.app import create_app
    from jobtracker.server.settings import Settings

    app = create_app(Settings(store_url=url, reaper_interval=0, metrics=False))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def answers(url: str, secret: str) -> dict[str, str]:
    """Each of `PATHS`' status and body (base64) as the app over `url` answers them."""
    client = await _client(url)
    try:
        found = {}
        for path in PATHS:
            response = await client.get(path, headers={"X-API-Key": secret})
            body = await response.read()
            found[path] = f"{response.status} {base64.b64encode(body).decode()}"
        return found
    finally:
        await client.close()


async def write(url: str) -> str:
    """Write `_jobs` through the app; the owner key's secret."""
    from jobtracker.store import make_store
    from jobtracker.store.keys import issue_key

    store = make_store(url)
    await store.open()
    try:
        secret: str = (await issue_key(store, "owner")).secret
    finally:
        await store.close()
    client = await _client(url)
    headers = {"X-API-Key": secret}
    try:
        for created, events, then in _jobs():
            response = await client.post("/api/v1/jobs", json=created, headers=headers)
            assert response.status == 201, await response.text()
            job = created["job_id"]
            response = await client.post(f"/api/v1/jobs/{job}/events", json=events,
                                         headers=headers)
            assert response.status == 200, await response.text()
            if then == "cancel":
                response = await client.post(f"/api/v1/jobs/{job}/cancel", headers=headers)
                assert response.status in (200, 202), await response.text()
    finally:
        await client.close()
    return secret


async def _main(db: str, out: str) -> None:
    url = db if db.startswith("postgresql://") else f"sqlite:///{db}"
    secret = await write(url)
    found = {"secret": secret, "answers": await answers(url, secret)}
    with open(out, "w") as file:  # noqa: ASYNC230 -- a script's last step; nothing else runs
        json.dump(found, file)


if __name__ == "__main__":
    tree, database, output = sys.argv[1:4]
    sys.path.insert(0, tree)  # the old release, ahead of the checkout under test
    import jobtracker

    assert Path(jobtracker.__file__).is_relative_to(tree), jobtracker.__file__
    asyncio.run(_main(database, output))
