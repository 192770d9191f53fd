"""`jobtracker jobs list` and `jobtracker prune` as a user types them, against a real server
and a real SQLite file."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest

from jobtracker.domain.events import Created, NewEvent, Succeeded, new_event_id
from jobtracker.domain.listing import log_time
from jobtracker.store import SqliteStore
from jobtracker.store.keys import issue_key
from tests.e2e.serving import http_get, jobtracker, serving


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(jobtracker(*args), capture_output=True, text=True, timeout=60,
                          env=env, check=False)


def _seed(db: Path, finished_ago: dt.timedelta) -> str:
    """Two finished jobs written `finished_ago` in the past (by a store whose clock says so),
    and a running one written now; returns the owner key."""

    async def write() -> str:
        then = dt.datetime.now(dt.UTC) - finished_ago
        past = SqliteStore(str(db), clock=lambda: log_time(then))
        await past.open()
        key = await issue_key(past, "owner")
        owner = key.record.key_id
        for job_id, labels in (("old-1", {"batch": "a"}), ("old-2", {"batch": "b"})):
            await past.create_job(job_id, Created(owner=owner, labels=labels))
            await past.append(job_id, [NewEvent(new_event_id(), Succeeded())])
        await past.close()
        now = SqliteStore(str(db))
        await now.open()
        await now.create_job("fresh", Created(owner=owner, labels={"batch": "a"}))
        await now.close()
        return key.secret

    return asyncio.run(write())


def test_jobs_list_prints_a_table_or_json_with_filters(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    key = _seed(db, dt.timedelta(hours=1))
    with serving(f"sqlite:///{db}", tmp_path / "serve.log") as (_, base):
        server = ("--server", base, "--key", key)
        table = run("jobs", "list", *server)
        as_json = run("jobs", "list", "--json", "--label", "batch:a", *server)
        finished = run("jobs", "list", "--json", "--status", "SUCCESS", "--limit", "1", *server)
        none = run("jobs", "list", "--label", "batch:zzz", *server)
        bad = run("jobs", "list", "--label", "nocolon", *server)

    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["JOB_ID", "STATUS", "PROGRESS", "OK", "FAILED", "CREATED",
                              "LABELS"]
    assert [row.split()[0] for row in rows] == ["fresh", "old-2", "old-1"]
    assert [job["job_id"] for job in json.loads(as_json.stdout)] == ["fresh", "old-1"]
    assert [job["job_id"] for job in json.loads(finished.stdout)] == ["old-2"]
    assert (none.returncode, none.stdout, none.stderr.strip()) == (0, "", "no jobs match")
    assert bad.returncode == 2
    assert bad.stderr.startswith("jobtracker: error: label:")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_prune_removes_jobs_finished_before_the_cutoff_and_a_server_answers_410(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    key = _seed(db, dt.timedelta(hours=2))
    store = ("--store", f"sqlite:///{db}")
    with serving(f"sqlite:///{db}", tmp_path / "serve.log") as (_, base):
        assert http_get(f"{base}/api/v1/jobs/old-1", {"X-API-Key": key})[0] == 200  # cached
        counted = run("prune", "--finished-before", "1h", "--dry-run", *store)
        kept = run("prune", "--finished-before", "3h", *store)
        pruned = run("prune", "--finished-before", "90m", *store)

        def gone() -> bool:
            return http_get(f"{base}/api/v1/jobs/old-1", {"X-API-Key": key})[0] == 410

        from tests.conditions import wait_until

        wait_until(gone, "the server to forget the pruned job")
        fresh = http_get(f"{base}/api/v1/jobs/fresh", {"X-API-Key": key})

    assert counted.returncode == 0, counted.stderr
    assert counted.stdout.startswith("would prune 2 jobs (4 events) finished before ")
    assert kept.stdout.startswith("pruned 0 jobs (0 events)")
    assert pruned.stdout.startswith("pruned 2 jobs (4 events)")
    assert fresh[0] == 200
    again = run("prune", "--finished-before", "1m", "--dry-run", *store)
    assert again.stdout.startswith("would prune 0 jobs")


@pytest.mark.parametrize(
    ("cutoff", "message"),
    [
        ("30s", "at least 1 minute"),
        ("0m", "at least 1 minute"),
        ("soon", "not a duration"),
        (dt.timedelta(days=1), "in the future"),
        (dt.timedelta(0), "less than a minute ago"),
        ("2026-13-01T00:00:00Z", "RFC 3339"),
    ],
)
def test_prune_refuses_a_cutoff_that_could_take_running_work(
    tmp_path: Path, cutoff: str | dt.timedelta, message: str
) -> None:
    if isinstance(cutoff, dt.timedelta):  # a moment from now, taken when the test runs
        cutoff = (dt.datetime.now(dt.UTC) + cutoff).isoformat()
    result = run("prune", "--finished-before", cutoff, "--store", f"sqlite:///{tmp_path}/j.db")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "j.db").exists()  # refused before anything was opened


def test_serve_refuses_a_retention_under_a_minute(tmp_path: Path) -> None:
    result = run("serve", "--retention", "10s", "--store", f"sqlite:///{tmp_path}/j.db")
    assert result.returncode == 2
    assert "--retention" in result.stderr
    assert "at least 1 minute" in result.stderr
