"""`jobtracker watch` and `jobtracker jobs show` against a real `jobtracker serve` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.serving import free_port, http_get, jobtracker, seed, serving

WATCHED = "watched-job"
ROWS = 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A running server on a fresh SQLite file: its base URL and an owner key."""
    folder = tmp_path_factory.mktemp("watch")
    store = f"sqlite:///{folder / 'jobs.db'}"
    key = seed(store)
    with serving(store, folder / "serve.log") as (_, base):
        yield base, key


def run(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """`jobtracker ARGS`, with $JOBTRACKER_API_KEY set to `key` (unset when None)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTRACKER_")}
    if key is not None:
        env["JOBTRACKER_API_KEY"] = key
    return subprocess.run(jobtracker(*args), capture_output=True, text=True, timeout=60,
                          env=env, check=False)


def create_job(base: str, key: str, job_id: str) -> None:
    request = ["-c", (
        "import sys, jobtracker\n"
        "with jobtracker.connect(sys.argv[1], api_key=sys.argv[2]) as t:\n"
        f"    t.create_job(job_id=sys.argv[3], total={ROWS})\n"
    ), base, key, job_id]
    subprocess.run([sys.executable, *request], check=True, timeout=60)


def start_worker(base: str, key: str, job_id: str, *extra: str) -> subprocess.Popen[bytes]:
    """The demo worker reporting on `job_id`: ROWS rows, 50 ms each (some invalid)."""
    return subprocess.Popen(
        [sys.executable, "-m", "jobtracker.cli.demo_worker", "--url", base, "--api-key", key,
         "--job-id", job_id, "--generate", str(ROWS), "--pause", "0.05", *extra],
        stdout=subprocess.DEVNULL,
    )


def test_watch_follows_a_job_to_success_and_prints_its_final_body(
    server: tuple[str, str],
) -> None:
    """Started before the worker, `watch` draws the rows as they come and exits 0 with the
    terminal body (the GET body) on stdout; the bar ends at all rows with the result's counts."""
    base, key = server
    create_job(base, key, WATCHED)
    watch = subprocess.Popen(jobtracker("watch", WATCHED, "--server", base, "--key", key),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = start_worker(base, key, WATCHED)
    out, err = watch.communicate(timeout=60)
    assert worker.wait(timeout=60) == 0
    assert watch.returncode == 0, err
    final = json.loads(out)
    status, body, _ = http_get(f"{base}/api/v1/jobs/{WATCHED}", {"X-API-Key": key})
    assert (status, final) == (200, json.loads(body))
    assert final["status"] == "SUCCESS"
    result = final["result"]
    assert f"{ROWS}/{ROWS}" in err
    assert "status=PROGRESS" in err
    assert f"ok={result['successful']}, failed={result['failed']}" in err


def test_watch_exits_1_on_failure_with_the_failure_body(server: tuple[str, str]) -> None:
    """A job that ends FAILURE: exit 1 and the FAILURE body on stdout; the key from
    $JOBTRACKER_API_KEY."""
    base, key = server
    create_job(base, key, "doomed")
    subprocess.run([sys.executable, "-c", (
        "import sys, jobtracker\n"
        "with jobtracker.connect(sys.argv[1], api_key=sys.argv[2]) as t, t.job('doomed') as j:\n"
        "    j.started(); j.failed('SMTP server down')\n"
    ), base, key], check=True, timeout=60)
    done = run("watch", "doomed", "--server", base, key=key)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout) == {"job_id": "doomed", "status": "FAILURE",
                                       "error": "SMTP server down"}


@pytest.mark.parametrize("command", ["watch", "jobs show"])
def test_refusals_and_no_server_are_one_line_with_exit_2(
    server: tuple[str, str], command: str
) -> None:
    """An unknown job (404), an unknown key (401), no key at all, and nothing listening: one
    line on stderr naming the problem, exit 2, nothing on stdout."""
    base, key = server
    words = command.split()
    cases = [
        (run(*words, "nobody-made-this", "--server", base, key=key), "Job not found"),
        (run(*words, WATCHED, "--server", base, "--key", "uc_live_nope"), "API key"),
        (run(*words, WATCHED, "--server", base), "no API key: pass --key KEY or set"),
        (run(*words, WATCHED, "--server", f"http://127.0.0.1:{free_port()}", key=key),
         "could not reach the server"),
    ]
    for done, message in cases:
        assert (done.returncode, done.stdout) == (2, ""), done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("jobtracker: error: ")
        assert message in done.stderr


def test_jobs_show_prints_the_body_as_pretty_json(server: tuple[str, str]) -> None:
    """`jobs show JOB_ID` prints what GET answers, indented; exit 0."""
    base, key = server
    create_job(base, key, "shown")
    done = run("jobs", "show", "shown", "--server", base, "--key", key)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"job_id": "shown", "status": "PENDING"}
    assert done.stdout.startswith('{\n  "job_id": "shown",')


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    """`jobtracker --version` is the installed version."""
    from importlib import metadata

    done = run("--version")
    assert (done.returncode, done.stdout) == (0, f"jobtracker {metadata.version('jobtracker')}\n")
