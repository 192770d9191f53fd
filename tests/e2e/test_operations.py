"""Operations with real processes on loopback: graceful SIGTERM, `--workers` metrics, logs,
configuration from the environment, and the one-line errors an operator sees."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobtracker.store.keys import hash_secret
from tests.conditions import wait_until
from tests.e2e.serving import free_port, http_get, jobtracker, seed, serving, stop
from tests.pg_database import drop_schema, new_schema_url, run_database
from tests.reliability.chaos import WriterLedger, check_after_kill
from tests.server.test_hostile_input import (
    BAD_API_KEYS,
    BAD_QUERIES,
    EVENT_BODIES,
    LAST_EVENT_IDS,
    PATH_IDS,
    UNPARSABLE_REQUESTS,
    raw_request,
)

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 8
SHUTDOWN_TIMEOUT = 5.0
JOB_ROUTE = "/api/v1/jobs/{job_id}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store of each kind, shared by the processes of one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    url = new_schema_url(run_database())
    yield url
    drop_schema(url)


def requests_counted(text: str, route: str, method: str = "GET", status: str = "200") -> float:
    """`jobtracker_http_requests_total` for one series, read with prometheus_client's parser."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jobtracker_http_requests_total" and sample.labels == {
                "method": method, "route": route, "status": status,
            }:
                return sample.value
    return 0.0


def waiters(base: str) -> dict[str, float]:
    """`jobtracker_waiters` by kind, from a scrape."""
    text = http_get(f"{base}/metrics")[1].decode()
    return {
        sample.labels["kind"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "jobtracker_waiters"
    }


def json_lines(log: Path, *, still_written: bool = False) -> list[dict[str, object]]:
    """Every line of a `--log-format json` server's output, each parsed (all must parse).

    `still_written`: the server is running, so the text after the last newline may be a line
    it is writing at this moment (a read can see part of a write), and is left out."""
    text = log.read_bytes()
    if still_written:
        text = text[: text.rfind(b"\n") + 1]
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


# --- graceful shutdown -------------------------------------------------------------------------


def test_sigterm_during_eight_sdk_writers_loses_no_acknowledged_event(
    store_url: str, tmp_path: Path
) -> None:
    """Eight SDK processes append through the server; SIGTERM: it exits 0 within
    --shutdown-timeout, and every batch it acknowledged is in the log, whole."""
    jobs = [f"w{n}" for n in range(WRITERS)]
    key = seed(store_url, *jobs)
    with serving(store_url, tmp_path / "serve.log",
                 "--shutdown-timeout", str(SHUTDOWN_TIMEOUT)) as (server, base):
        outputs = [tmp_path / f"{job}.out" for job in jobs]
        writers = []
        for n, (job, output) in enumerate(zip(jobs, outputs, strict=True)):
            with open(output, "wb") as out:
                writers.append(subprocess.Popen(
                    [sys.executable, "-m", "tests.reliability.sdk_writer", base, job,
                     str(n * 1_000_000), str(n), key],
                    cwd=ROOT, stdout=out, stderr=subprocess.DEVNULL,
                ))
        try:
            wait_until(lambda: all(b"ack " in o.read_bytes() for o in outputs),
                       "every writer to have a batch acknowledged")
            code, took = stop(server)
        finally:
            for writer in writers:
                writer.kill()
                writer.wait()
    assert code == 0, (tmp_path / "serve.log").read_text()
    assert took < SHUTDOWN_TIMEOUT
    for job, output in zip(jobs, outputs, strict=True):
        ledger = WriterLedger()
        ledger.read(output.read_text())
        assert ledger.acked
        check_after_kill(store_url, job, ledger)


def _held_long_poll(base: str, key: str, answers: list[int]) -> None:
    request = urllib.request.Request(f"{base}/api/v1/jobs/held?wait=60",
                                     headers={"X-API-Key": key, "If-None-Match": '"1"'})
    try:
        with urllib.request.urlopen(request, timeout=90) as answer:
            answers.append(answer.status)
    except urllib.error.HTTPError as error:
        answers.append(error.code)


def _open_stream(base: str, key: str) -> socket.socket:
    port = int(base.rsplit(":", 1)[1])
    stream = socket.create_connection(("127.0.0.1", port), timeout=90)
    stream.sendall(raw_request(b"/api/v1/jobs/held/stream", b"X-API-Key: " + key.encode()))
    return stream


def _read_to_end(stream: socket.socket) -> bytes:
    received = b""
    while chunk := stream.recv(65536):
        received += chunk
    return received


def test_sigterm_answers_held_long_polls_304_and_ends_streams_with_a_comment(
    tmp_path: Path,
) -> None:
    """A `?wait=60` held at SIGTERM is answered 304 and an open stream ends with a comment that
    asks the client to reconnect; the server exits 0 long before the wait would have ended."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    key = seed(store, "held")
    with serving(store, tmp_path / "serve.log", "--shutdown-timeout", "5") as (server, base):
        answers: list[int] = []
        polling = threading.Thread(target=_held_long_poll, args=(base, key, answers))
        polling.start()
        stream = _open_stream(base, key)
        wait_until(lambda: waiters(base) == {"long-poll": 1, "stream": 1},
                   "the long-poll and the stream to be held")
        code, took = stop(server)
        polling.join(timeout=30)
        with stream:
            received = _read_to_end(stream)
    assert (code, answers) == (0, [304])
    assert took < 5
    assert received.rstrip(b"\r\n0").endswith(b": server shutting down, reconnect")


# --- several workers ---------------------------------------------------------------------------


def test_a_scrape_of_two_workers_counts_the_requests_both_answered(tmp_path: Path) -> None:
    """With --workers 2 each GET lands on either process; any scrape, served by either, shows
    the sum of both processes' counters, and does so every time."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    key = seed(store, "shared")
    log = tmp_path / "serve.log"
    port = free_port()
    with open(log, "wb") as out:
        server = subprocess.Popen(
            jobtracker("serve", "--store", store, "--port", str(port), "--workers", "2",
                       "--access-log", "--log-format", "json"),
            stdout=out, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: log.read_text().count("Running on") >= 2, "both workers to listen")
        gets = 0
        # A fresh connection per GET: the kernel spreads them over both workers.
        while len(_pids_that_answered(log, JOB_ROUTE)) < 2:
            assert http_get(f"{base}/api/v1/jobs/shared", {"X-API-Key": key})[0] == 200
            gets += 1
            assert gets < 500, "one worker answered every connection"
        scrapes = 0
        while len(_pids_that_answered(log, "/metrics")) < 2 or scrapes < 10:
            assert requests_counted(http_get(f"{base}/metrics")[1].decode(), JOB_ROUTE) == gets
            scrapes += 1
            assert scrapes < 500, "one worker answered every scrape"
        code, _ = stop(server)
        assert code == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _pids_that_answered(log: Path, route: str) -> set[object]:
    return {line["pid"] for line in json_lines(log, still_written=True)
            if line.get("route") == route}


# --- logs --------------------------------------------------------------------------------------


def _hostile_requests(key: str) -> list[bytes]:
    """The hostile-input catalogue as raw requests, every one carrying the real key (and a few
    with the key where no key belongs: path, query, body, X-Request-ID, X-Forwarded-For)."""
    auth = b"X-API-Key: " + key.encode()
    requests = [
        raw_request(b"/api/v1/jobs/target/events", auth, b"Content-Type: application/json",
                    method=b"POST", body=body)
        for _, body, _, _ in EVENT_BODIES
    ]
    requests += [raw_request(b"/api/v1/jobs/" + urllib.parse.quote(job_id).encode(), auth)
                 for job_id in PATH_IDS]
    requests += [
        raw_request(f"/api/v1/jobs/target{route}?{urllib.parse.urlencode(query)}".encode(), auth,
                    b'If-None-Match: "1"')
        for _, route, query, _, _ in BAD_QUERIES
    ]
    requests += [raw_request(b"/api/v1/jobs/target/stream", auth, b"Last-Event-ID: " + bad)
                 for bad in LAST_EVENT_IDS]
    requests += [raw_request(b"/api/v1/jobs/target", b"X-API-Key: " + bad) for bad in BAD_API_KEYS]
    requests += [request for _, request in UNPARSABLE_REQUESTS]
    misplaced = key.encode()
    requests += [
        raw_request(b"/api/v1/jobs/" + misplaced, auth),
        raw_request(b"/api/v1/jobs/target?api_key=" + misplaced, auth),
        raw_request(b"/api/v1/jobs", auth, method=b"POST",
                    body=b'{"job_id": "' + misplaced + b'"}'),
        raw_request(b"/api/v1/jobs/target", auth, b"X-Request-ID: " + misplaced),
        raw_request(b"/api/v1/jobs/target", auth, b"X-Forwarded-For: " + misplaced),
        raw_request(b"/api/v1/jobs/target", b"X-API-Key: " + hash_secret(key).encode()),
    ]
    return requests


def _send(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_key_hash_or_body_reaches_the_log_across_the_hostile_catalogue(
    tmp_path: Path, log_format: str
) -> None:
    """Every hostile request of the catalogue, the real key on each, and the key put where keys
    do not belong: the access log has a line for each, none with the key, its hash or a body."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    key = seed(store, "target")
    log = tmp_path / "serve.log"
    requests = _hostile_requests(key)
    with serving(store, log, "--access-log", "--log-format", log_format) as (server, base):
        port = int(base.rsplit(":", 1)[1])
        for request in requests:
            assert _send(port, request).startswith(b"HTTP/1.")
        assert stop(server)[0] == 0
    output = log.read_text(errors="replace")
    assert output.count("jobtracker.access") >= len(requests) - len(UNPARSABLE_REQUESTS)
    for secret in (key, key.removeprefix("uc_live_"), hash_secret(key)):
        assert secret not in output
    assert "x" * 1000 not in output  # long texts: bodies are never logged, paths are cut short
    assert "a@uni.edu" not in output
    if log_format == "json":
        for line in json_lines(log):
            assert {"time", "level", "logger", "message"} <= line.keys()
            if line["logger"] == "jobtracker.access":
                assert {"method", "route", "status", "duration", "request_id"} <= line.keys()


def test_the_access_log_is_off_unless_asked_for(tmp_path: Path) -> None:
    """Without --access-log a served request leaves no line."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    seed(store)
    log = tmp_path / "serve.log"
    with serving(store, log) as (server, base):
        assert http_get(f"{base}/healthz")[0] == 200
        assert stop(server)[0] == 0
    assert "jobtracker.access" not in log.read_text()


@pytest.mark.parametrize(("allowed", "shown"), [
    ("127.0.0.1", "203.0.113.7"),
    ("10.0.0.0/8", "127.0.0.1"),
    ("*", "198.51.100.1"),
])
def test_x_forwarded_for_is_believed_only_from_trusted_proxies(
    tmp_path: Path, allowed: str, shown: str
) -> None:
    """Our peer is 127.0.0.1. Trusted, the client is the nearest address in X-Forwarded-For we do
    not trust (all trusted with `*`: the first); untrusted, the header is ignored."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    seed(store)
    log = tmp_path / "serve.log"
    with serving(store, log, "--access-log", "--log-format", "json",
                 "--forwarded-allow-ips", allowed) as (server, base):
        sent = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Request-ID": "fwd-1"}
        assert http_get(f"{base}/healthz", sent)[0] == 200
        assert stop(server)[0] == 0
    (line,) = [line for line in json_lines(log) if line.get("request_id") == "fwd-1"]
    assert line["remote"] == shown


# --- configuration and one-line errors ---------------------------------------------------------


def test_serve_on_a_port_in_use_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    """A taken --port (one process or several) or --metrics-port: one line, exit 2, no traceback."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for extra in ([], ["--workers", "2"]):
            ran = subprocess.run(jobtracker("serve", "--store", store, "--port", port, *extra),
                                 capture_output=True, text=True, timeout=60, check=False)
            assert ran.returncode == 2
            assert ran.stderr.strip().splitlines() == [
                f"jobtracker: error: port {port} on 127.0.0.1 is already in use"]
        ran = subprocess.run(
            jobtracker("serve", "--store", store, "--port", str(free_port()),
                       "--metrics-port", port),
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert (ran.returncode, "Traceback" in ran.stderr) == (2, False)
        assert f"port {port} on 127.0.0.1 is already in use" in ran.stderr


def test_metrics_port_serves_metrics_apart_from_the_api(tmp_path: Path) -> None:
    """With --metrics-port the API's port has no /metrics; the other port has nothing else."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    seed(store)
    metrics_port = free_port()
    with serving(store, tmp_path / "serve.log", "--metrics-port", str(metrics_port)) as (
        server, base,
    ):
        scrape = f"http://127.0.0.1:{metrics_port}/metrics"
        before = requests_counted(http_get(scrape)[1].decode(), "/healthz")
        assert http_get(f"{base}/healthz")[0] == 200
        assert http_get(f"{base}/metrics")[0] == 404
        status, body, _ = http_get(scrape)
        assert status == 200
        assert requests_counted(body.decode(), "/healthz") == before + 1
        assert http_get(f"http://127.0.0.1:{metrics_port}/healthz")[0] == 404
        assert stop(server)[0] == 0


def test_environment_variables_configure_serve_and_a_flag_wins(tmp_path: Path) -> None:
    """JOBTRACKER_* variables set serve's flags; a flag given as well wins over its variable."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    seed(store)
    metrics_port, flag_port = free_port(), free_port()
    env = {**os.environ, "JOBTRACKER_PORT": str(free_port()), "JOBTRACKER_ACCESS_LOG": "true",
           "JOBTRACKER_LOG_FORMAT": "json", "JOBTRACKER_METRICS_PORT": str(metrics_port)}
    log = tmp_path / "serve.log"
    with serving(store, log, "--no-access-log", port=flag_port, env=env) as (server, base):
        assert base.endswith(f":{flag_port}")
        assert http_get(f"http://127.0.0.1:{metrics_port}/metrics")[0] == 200
        assert stop(server)[0] == 0
    lines = json_lines(log)  # JSON from the variable
    assert lines
    assert not [line for line in lines if line["logger"] == "jobtracker.access"]  # flag won


def test_a_malformed_variable_is_refused_naming_it(tmp_path: Path) -> None:
    """JOBTRACKER_SHUTDOWN_TIMEOUT=soon: one line naming the variable, exit 2."""
    env = {**os.environ, "JOBTRACKER_SHUTDOWN_TIMEOUT": "soon"}
    ran = subprocess.run(jobtracker("serve", "--store", f"sqlite:///{tmp_path / 'j.db'}"),
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert ran.returncode == 2
    assert ran.stderr.strip() == "jobtracker: error: JOBTRACKER_SHUTDOWN_TIMEOUT='soon': not a " \
        "valid float"


@pytest.mark.parametrize("command", [["serve"], ["webhooks", "run"]])
def test_webhook_variables_configure_serve_and_webhooks_run_alike(
    tmp_path: Path, command: list[str]
) -> None:
    """`webhooks run` reads the same JOBTRACKER_WEBHOOK_* variables as serve: a malformed one is
    refused by both in one line naming it (a type's own complaint, never a traceback), and its
    help names each variable."""
    env = {**os.environ, "JOBTRACKER_WEBHOOK_GIVE_UP": "soon"}
    ran = subprocess.run(jobtracker(*command, "--store", f"sqlite:///{tmp_path / 'j.db'}"),
                         capture_output=True, text=True, timeout=60, env=env, check=False)
    assert ran.returncode == 2
    assert ran.stderr.strip() == ("jobtracker: error: JOBTRACKER_WEBHOOK_GIVE_UP: 'soon': not a "
                                  "number of seconds")
    shown = subprocess.run(jobtracker(*command, "--help"), capture_output=True, text=True,
                           timeout=60, check=True).stdout
    assert "JOBTRACKER_WEBHOOK_GIVE_UP" in " ".join(shown.split())


def test_version_and_serve_help_with_every_default_and_variable() -> None:
    """`jobtracker --version` names the version; `serve --help` shows each flag's default and
    its variable."""
    version = subprocess.run(jobtracker("--version"), capture_output=True, text=True, timeout=60,
                             check=True)
    assert re.fullmatch(r"jobtracker \d+\.\d+\.\d+\S*\n", version.stdout)
    shown = subprocess.run(jobtracker("serve", "--help"), capture_output=True, text=True,
                           timeout=60, check=True).stdout
    flat = " ".join(shown.split())
    for flag, default in [("shutdown-timeout", "10.0"), ("log-format", "text"),
                          ("forwarded-allow-ips", "127.0.0.1"), ("port", "8080"),
                          ("access-log", "False"), ("metrics", "True")]:
        variable = "JOBTRACKER_" + flag.upper().replace("-", "_")
        assert re.search(rf"--{flag}\b.*?\(default: {re.escape(default)}\) \[env {variable}\]",
                         flat), flag
    assert "[env JOBTRACKER_METRICS_PORT]" in flat


def test_migrate_prints_the_store_url_with_its_password_masked() -> None:
    """`migrate` on a PostgreSQL URL with a password shows `***` in its place, never the secret
    (the test server trusts every login, so any password connects)."""
    url = new_schema_url(run_database())
    with_password = url.replace("postgresql://postgres@", "postgresql://postgres:s3cr3t-pw@", 1)
    assert with_password != url
    try:
        ran = subprocess.run(jobtracker("migrate", "--store", with_password), capture_output=True,
                             text=True, timeout=60, check=False)
    finally:
        drop_schema(url)
    assert ran.returncode == 0, ran.stderr
    assert "s3cr3t-pw" not in ran.stdout + ran.stderr
    assert ran.stdout.startswith("migrated postgresql://postgres:***@")


def test_stopping_with_sigint_also_exits_0(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) stops the server as SIGTERM does: exit 0 within the default 10 s, an idle
    keep-alive connection notwithstanding."""
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    seed(store)
    with serving(store, tmp_path / "serve.log") as (server, base):
        connection = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]))
        try:  # a keep-alive connection left open: stopping closes it, it does not wait for it
            connection.request("GET", "/readyz")
            assert connection.getresponse().status == 200
            asked = time.monotonic()
            server.send_signal(signal.SIGINT)
            assert server.wait(timeout=30) == 0
            assert time.monotonic() - asked < 10
        finally:
            connection.close()
