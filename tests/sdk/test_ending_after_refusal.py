"""A job's ending is never lost with a refused batch it happened to ride in."""

from __future__ import annotations

import pytest

import jobtracker
from jobtracker.domain.errors import Conflict
from tests.sdk.conftest import LiveServer


def test_a_failed_riding_with_a_refused_row_is_recorded_on_its_own(
    live_server: LiveServer,
) -> None:
    """Row 1 reported twice and `failed` in one batch: the batch is refused, the job FAILURE."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job(total=2)
        with tracker.job(job_id) as job:
            job.row_succeeded(1, "ana@uni.edu", internal=True)
            job.flush()
            job.row_failed(1, "ana@uni.edu", "changed its mind")
            with pytest.raises(Conflict, match="already has an outcome"):
                job.failed("Achievement not found")
        assert tracker.wait(job_id, timeout=10) == {
            "job_id": job_id, "status": "FAILURE", "error": "Achievement not found"
        }


def test_a_succeeded_riding_with_a_refused_row_ends_the_block_failure(
    live_server: LiveServer,
) -> None:
    """The refusal is raised from `succeeded`, and leaving the block records it as the failure."""
    with jobtracker.connect(live_server.base_url, api_key=live_server.owner_key) as tracker:
        job_id = tracker.create_job(total=2)
        with pytest.raises(Conflict):  # noqa: PT012, SIM117 - the block exit is under test
            with tracker.job(job_id) as job:
                job.row_succeeded(1, "ana@uni.edu", internal=True)
                job.flush()
                job.row_failed(1, "ana@uni.edu", "changed its mind")
                job.succeeded()
        done = tracker.wait(job_id, timeout=10)
    assert done["status"] == "FAILURE"
    assert "row 1 of job" in done["error"]


async def test_an_asyncio_job_records_its_failed_on_its_own_too(live_server: LiveServer) -> None:
    """The asyncio twin: the refusal reaches `flush`, the `failed` is recorded alone."""
    async with jobtracker.connect_async(
        live_server.base_url, api_key=live_server.owner_key
    ) as tracker:
        job_id = await tracker.create_job(total=2)
        async with tracker.job(job_id) as job:
            job.row_succeeded(1, "ana@uni.edu", internal=True)
            await job.flush()
            job.row_failed(1, "ana@uni.edu", "changed its mind")
            job.failed("Achievement not found")
            with pytest.raises(Conflict, match="already has an outcome"):
                await job.flush()
        assert await tracker.wait(job_id, timeout=10) == {
            "job_id": job_id, "status": "FAILURE", "error": "Achievement not found"
        }
