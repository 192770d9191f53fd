"""The seed page's own `poll_job`, verbatim, against a live `jobtracker serve` while the SDK-based
demo worker reports from another process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from jobtracker.cli.demo import _free_port, _post_json, _wait_until_serving
from jobtracker.store import SqliteStore
from jobtracker.store.keys import issue_key

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "scripts" / "sample_recipients.csv"
#: Set by the `live_base_url` fixture: the one line of the seed's function we change.
LIVE_BASE_URL = ""


# From jobs-api.seed.txt, "Patron de polling recomendado"; only the `base_url` line differs.
def poll_job(job_id, api_key, interval=2, max_attempts=300):
    """Consulta el estado de un job cada `interval` segundos."""
    headers = {"X-API-Key": api_key}
    base_url = LIVE_BASE_URL
    for attempt in range(max_attempts):  # noqa: B007 (verbatim)
        response = requests.get(f"{base_url}/jobs/{job_id}", headers=headers)
        data = response.json()
        if data["status"] == "SUCCESS":
            return data["result"]
        elif data["status"] == "FAILURE":
            raise Exception(f"Job failed: {data['error']}")
        elif data["status"] == "PROGRESS":
            progress = data.get("progress", {})
            current = progress.get("current", 0)
            total = progress.get("total", 0)
            print(f" Progress: {current}/{total}")
        time.sleep(interval)
    raise TimeoutError("Job did not complete in time")


SEED_RESULT = {
    "total": 50,
    "successful": 48,
    "failed": 2,
    "errors": [
        {"row": 12, "email": "invalido@test", "error": "Invalid email: invalido@test"},
        {"row": 37, "email": "duplicado@test.com", "error": "Calificacion invalida"},
    ],
    "emails_sent": 48,
    "emails_failed": 0,
    "internal_count": 30,
    "external_count": 18,
}


async def _keys(db_path: str) -> tuple[str, str]:
    store = SqliteStore(db_path)
    await store.open()
    try:
        owner = await issue_key(store, "platform")
        worker = await issue_key(
            store, "issuance worker", scope="worker", owners=[owner.record.key_id]
        )
        return owner.secret, worker.secret
    finally:
        await store.close()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str, str]]:
    """`jobtracker serve` in a subprocess on a fresh file: (server URL, owner key, worker key)."""
    db_path = str(tmp_path / "jobs.db")
    owner, worker = asyncio.run(_keys(db_path))
    port = _free_port()
    command = [sys.executable, "-m", "jobtracker", "serve", "--store", f"sqlite:///{db_path}",
               "--port", str(port)]
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_until_serving(server, port)
            server_url = f"http://127.0.0.1:{port}"
            monkeypatch.setattr(sys.modules[__name__], "LIVE_BASE_URL", f"{server_url}/api/v1")
            yield server_url, owner, worker
        finally:
            server.terminate()
            server.wait(timeout=30)


def test_seed_poll_job_gets_the_seed_result_while_the_demo_worker_runs(
    served: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A client written against the seed page watches a real worker's job to the exact result."""
    server_url, owner_key, worker_key = served
    job = _post_json(f"{server_url}/api/v1/jobs", owner_key, {"total": 50})
    worker = subprocess.Popen([
        sys.executable, str(REPO / "scripts" / "demo_worker.py"), "--url", server_url,
        "--api-key", worker_key, "--job-id", job["job_id"], "--recipients", str(SAMPLE),
        "--email-failure-rate", "0", "--pause", "0.03",
    ], stdout=subprocess.DEVNULL)
    try:
        result = poll_job(job["job_id"], owner_key, interval=0.1)
    finally:
        assert worker.wait(timeout=60) == 0
    assert result == SEED_RESULT
    assert " Progress: " in capsys.readouterr().out
