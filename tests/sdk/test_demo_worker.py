"""The simulated credential-issuance worker: what it reports for the recipients it is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobtracker.cli.demo_worker import (
    demo_recipients,
    generate_recipients,
    main,
    read_recipients,
)
from jobtracker.domain.projection import job_body
from jobtracker.store.sqlite.log import SqliteLog
from tests.sdk.conftest import LiveServer

SAMPLE = Path(__file__).resolve().parents[2] / "scripts" / "sample_recipients.csv"


def result_of(db_path: str, job_id: str) -> dict[str, Any]:
    log = SqliteLog(db_path)
    try:
        view = log.get_job(job_id, 10_000)
        assert view is not None
        body = job_body(view.state, view.errors, 10_000)
    finally:
        log.close()
    assert body["status"] == "SUCCESS"
    result: dict[str, Any] = body["result"]
    return result


def run_worker(
    server: LiveServer, capsys: pytest.CaptureFixture[str], *args: str
) -> dict[str, Any]:
    """Run the worker's command line straight into the server's SQLite file."""
    assert main(["--url", server.store_url, "--api-key", server.owner_key, *args]) == 0
    job_id = capsys.readouterr().out.split()[0]
    return result_of(server.db_path, job_id)


def test_shipped_sample_is_the_demos_recipient_list() -> None:
    """scripts/sample_recipients.csv holds exactly the recipients `jobtracker demo` uses."""
    assert read_recipients(SAMPLE) == demo_recipients()


def test_sample_gives_the_seeds_counters(
    live_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """With no e-mail failures, the sample ends with the seed's SUCCESS counters."""
    result = run_worker(live_server, capsys, "--recipients", str(SAMPLE),
                        "--email-failure-rate", "0")
    assert (result["successful"], result["failed"], result["internal_count"],
            result["external_count"], result["emails_sent"]) == (48, 2, 30, 18, 48)
    assert [e["row"] for e in result["errors"]] == [12, 37]


def test_generated_run_adds_up_and_repeats_with_its_seed(
    live_server: LiveServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every row has one outcome, every credential one e-mail outcome, internal = on the org's
    domain; some e-mails fail, and the same seed gives the same run."""
    args = ("--generate", "300", "--seed", "7", "--email-failure-rate", "0.2", "--batch-size", "64")
    result = run_worker(live_server, capsys, *args)
    people = {p.row: p for p in generate_recipients(300, seed=7)}
    failed_rows = {e["row"] for e in result["errors"]}
    issued = [p for row, p in people.items() if row not in failed_rows]
    assert result["total"] == 300 == result["successful"] + result["failed"]
    assert result["failed"] > 0
    assert all(people[e["row"]].email == e["email"] for e in result["errors"])
    assert result["emails_sent"] + result["emails_failed"] == result["successful"]
    assert result["emails_failed"] > 0
    assert result["internal_count"] == sum(p.email.endswith("@uni.edu") for p in issued)
    assert run_worker(live_server, capsys, *args) == result
