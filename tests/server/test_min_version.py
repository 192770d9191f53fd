"""`?min_version=` on a server without a replica; `serve --read-url` refusing what cannot work."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from jobtracker.cli.main import main
from jobtracker.store.keys import IssuedKey


async def test_min_version_is_answered_by_the_store_itself(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Without a replica every answer is current: min_version, met or not yet, changes nothing."""
    headers = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "job-1"}, headers=headers)
    for floor in ("0", "1", "9"):
        answer = await client.get(f"/api/v1/jobs/job-1?min_version={floor}", headers=headers)
        assert answer.status == 200
        assert await answer.json() == {"job_id": "job-1", "status": "PENDING"}


async def test_a_bad_min_version_is_422_naming_it(client: TestClient, owner_key: IssuedKey) -> None:
    """A min_version that is not a whole number from 0 is refused in the style of `wait`."""
    headers = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "job-1"}, headers=headers)

    answer = await client.get("/api/v1/jobs/job-1?min_version=-3", headers=headers)

    assert answer.status == 422
    assert await answer.json() == {"detail": "min_version: must be a whole number, 0 or more: "
                                             "the version an append was answered with"}


@pytest.mark.parametrize(("store", "read_url", "says"), [
    ("sqlite:///jobs.db", "postgresql://replica/jobs", "needs a postgresql:// store"),
    ("postgresql://primary/jobs", "sqlite:///copy.db", "must be a postgresql:// URL"),
])
def test_serve_refuses_a_read_url_that_cannot_be_a_replica(
    store: str, read_url: str, says: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replica is a PostgreSQL standby of a PostgreSQL store: anything else exits 2, saying so,
    whether given as --read-url or as JOBTRACKER_READ_URL."""
    assert main(["serve", "--store", store, "--read-url", read_url]) == 2
    assert says in capsys.readouterr().err
    monkeypatch.setenv("JOBTRACKER_READ_URL", read_url)
    assert main(["serve", "--store", store]) == 2
    assert says in capsys.readouterr().err
