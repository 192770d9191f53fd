"""Tracked Celery tasks in real workers: exact counters under retries, redelivery, kills,
revokes and cancels."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from celery import Celery

import jobtracker
import jobtracker.celery
from jobtracker.celery import TrackedTask
from tests.celery_integration import app as tasks
from tests.celery_integration.conftest import Platform, Worker, wait_for


def body(platform: Platform, job_id: str, key: str | None = None) -> httpx.Response:
    """GET the job as a customer would."""
    headers = {"X-API-Key": key or platform.owner_key}
    return httpx.get(f"{platform.base_url}/api/v1/jobs/{job_id}", headers=headers)


def final(platform: Platform, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """The job's terminal body, read with the owner's key."""
    with jobtracker.connect(platform.base_url, api_key=platform.owner_key) as tracker:
        return tracker.wait(job_id, timeout=timeout)


def publish(task: Any, worker: Worker, platform: Platform, count: int, **options: Any) -> str:
    """Enqueue `task` for the platform's customer on `worker`'s queue; the task id."""
    kwargs = {"count": count, "owner": platform.owner_id, **options}
    return str(task.apply_async(kwargs=kwargs, queue=worker.queue).id)


def progressed(platform: Platform, job_id: str, rows: int) -> Callable[[], bool]:
    """Whether the job has reported at least `rows` rows."""

    def check() -> bool:
        data = body(platform, job_id).json()
        return data.get("progress", {}).get("current", 0) >= rows

    return check


@pytest.fixture(scope="module")
def solo(start_worker: Callable[..., Worker]) -> Worker:
    """A solo-pool worker reporting over HTTP."""
    return start_worker("solo")


@pytest.fixture(scope="module")
def prefork(start_worker: Callable[..., Worker]) -> Worker:
    """A prefork worker (one child) reporting over HTTP."""
    return start_worker("prefork")


def test_a_published_task_reads_pending_before_any_worker_takes_it(platform: Platform) -> None:
    """Right after apply_async the job is PENDING with the task's id (never 404)."""
    result = tasks.report_rows.apply_async(
        kwargs={"count": 3, "owner": platform.owner_id}, queue=f"nobody-{os.getpid()}"
    )
    answer = body(platform, result.id)
    assert (answer.status_code, answer.json()) == (
        200, {"job_id": result.id, "status": "PENDING"}
    )


def test_a_200_row_task_ends_success_with_exact_counters(
    platform: Platform, solo: Worker
) -> None:
    """Rows 7 and 150 fail; the result counts 200 rows, 198 successful, both errors listed."""
    job_id = publish(tasks.report_rows, solo, platform, 200, fail_rows=[7, 150])
    result = final(platform, job_id)["result"]
    assert (result["total"], result["successful"], result["failed"]) == (200, 198, 2)
    assert [error["row"] for error in result["errors"]] == [7, 150]
    assert result["internal_count"] + result["external_count"] == 198


def test_a_task_retried_twice_counts_every_row_once(platform: Platform, solo: Worker) -> None:
    """Two autoretried attempts re-report rows 1-99; the SUCCESS counts each row once."""
    job_id = publish(tasks.report_rows, solo, platform, 200, fail_times=2, fail_rows=[3])
    done = final(platform, job_id)
    assert done["status"] == "SUCCESS"
    assert (done["result"]["total"], done["result"]["failed"]) == (200, 1)


def test_an_exception_ends_the_job_failure_with_its_text(
    platform: Platform, solo: Worker
) -> None:
    """A task that raises for good ends FAILURE with the exception's message."""
    job_id = publish(
        tasks.report_rows, solo, platform, 50, raise_at=20, raise_text="Achievement not found"
    )
    assert final(platform, job_id) == {
        "job_id": job_id, "status": "FAILURE", "error": "Achievement not found"
    }


def test_a_row_whose_outcome_changes_on_retry_fails_the_job_with_the_conflict(
    platform: Platform, solo: Worker
) -> None:
    """A retry reporting row 5 failed after it succeeded ends FAILURE naming the row."""
    job_id = publish(tasks.report_rows, solo, platform, 20, fail_times=1, flip=True)
    done = final(platform, job_id)
    assert done["status"] == "FAILURE"
    assert "row 5 of job" in done["error"]
    assert "already has an outcome" in done["error"]


def test_the_job_belongs_to_the_customer_the_producer_named(
    platform: Platform, solo: Worker
) -> None:
    """A worker key enqueues for the other customer: only that customer's key reads the job."""
    result = tasks.report_rows.apply_async(
        kwargs={"count": 5}, queue=solo.queue, jobtracker_owner=platform.other_id
    )
    done = final_for(platform, result.id, platform.other_key)
    assert done["result"]["total"] == 5
    assert body(platform, result.id).status_code == 403


def final_for(platform: Platform, job_id: str, key: str) -> dict[str, Any]:
    """The job's terminal body, read with `key`."""
    with jobtracker.connect(platform.base_url, api_key=key) as tracker:
        return tracker.wait(job_id, timeout=60)


def test_a_publish_that_fails_leaves_the_job_failure_not_pending(platform: Platform) -> None:
    """With the broker unreachable apply_async raises and the job reads FAILURE."""
    broken = Celery("broken", broker="redis://127.0.0.1:1/13")
    broken.conf.broker_transport_options = {"max_retries": 1}
    jobtracker.celery.setup(broken, url=platform.base_url, api_key=platform.worker_key)

    @broken.task(base=TrackedTask, bind=True, track_owner=lambda **kw: kw["owner"])
    def unsent(self: TrackedTask, owner: str) -> None:
        """Never runs."""

    job_id = "publish-fails-" + os.urandom(4).hex()
    with pytest.raises(Exception, match=r"Connection refused|Error 111"):
        unsent.apply_async(kwargs={"owner": platform.owner_id}, task_id=job_id, retry=False)
    done = body(platform, job_id).json()
    assert done["status"] == "FAILURE"
    assert done["error"].startswith("Publishing the task failed: ")


def test_a_cancel_through_the_api_stops_the_task_at_its_next_report(
    platform: Platform, solo: Worker
) -> None:
    """The owner cancels a running task: it stops, and the job ends FAILURE Cancelled."""
    job_id = publish(tasks.report_rows, solo, platform, 2000, delay=0.01)
    wait_for(progressed(platform, job_id, 10), 30, "the task to report rows")
    answer = httpx.post(
        f"{platform.base_url}/api/v1/jobs/{job_id}/cancel",
        headers={"X-API-Key": platform.owner_key},
    )
    assert answer.status_code == 202
    done = final(platform, job_id)
    assert done == {"job_id": job_id, "status": "FAILURE", "error": "Cancelled"}


def test_revoke_with_terminate_ends_the_job_cancelled(
    platform: Platform, prefork: Worker
) -> None:
    """revoke(terminate=True) on a running task ends its job FAILURE Cancelled."""
    job_id = publish(tasks.report_rows, prefork, platform, 2000, delay=0.01)
    wait_for(progressed(platform, job_id, 10), 30, "the task to report rows")
    tasks.app.control.revoke(job_id, terminate=True)
    assert final(platform, job_id)["error"] == "Cancelled"


def test_a_killed_attempt_under_acks_late_is_redelivered_and_counted_exactly(
    platform: Platform, prefork: Worker, tmp_path: Path
) -> None:
    """SIGKILL of the worker mid-task: the redelivered attempt ends the same job, each row once."""
    pid_file = str(tmp_path / "pids")
    job_id = publish(
        tasks.report_rows_late, prefork, platform, 300, delay=0.005, pid_file=pid_file
    )
    wait_for(progressed(platform, job_id, 50), 30, "the task to report 50 rows")
    os.kill(tasks.pids(pid_file)[0], signal.SIGKILL)
    done = final(platform, job_id)
    assert done["status"] == "SUCCESS"
    assert (done["result"]["total"], done["result"]["successful"]) == (300, 300)
    assert len(set(tasks.pids(pid_file))) == 2


def test_a_killed_worker_without_acks_late_is_reaped_as_lost(
    platform: Platform, prefork: Worker, tmp_path: Path
) -> None:
    """SIGKILL with early acknowledgement: nobody redelivers, the reaper ends the job."""
    pid_file = str(tmp_path / "pids")
    job_id = publish(tasks.report_rows, prefork, platform, 3000, delay=0.01, pid_file=pid_file)
    wait_for(progressed(platform, job_id, 20), 30, "the task to report 20 rows")
    os.kill(tasks.pids(pid_file)[0], signal.SIGKILL)
    assert final(platform, job_id)["error"] == "Worker lost: no report for 5 s"


def test_a_worker_reporting_straight_into_the_store_counts_exactly(
    platform: Platform, start_worker: Callable[..., Worker]
) -> None:
    """A worker with a sqlite:/// URL (no HTTP) retries twice and ends SUCCESS, rows once."""
    worker = start_worker("solo", url=f"sqlite:///{platform.db_path}")
    job_id = publish(tasks.report_rows, worker, platform, 200, fail_times=2, fail_rows=[9])
    result = final(platform, job_id)["result"]
    assert (result["total"], result["successful"], result["failed"]) == (200, 199, 1)
