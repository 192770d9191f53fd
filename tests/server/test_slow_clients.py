"""Slow, stalled and greedy clients cannot take a server's connections or flood its log.

Each test runs `jobtracker serve` as a process of its own, as users do, with short timeouts.
"""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.reliability.test_crash import ROOT, _free_port, _wait_for_port

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
TRICKLERS = 50


def _serve(
    tmp_path: Path, *extra: str, limit: int | None = None
) -> tuple[subprocess.Popen[bytes], int, str]:
    store = f"sqlite:///{tmp_path / 'slow.db'}"
    created = subprocess.run(
        [sys.executable, "-m", "jobtracker", "keys", "create", "--name", "o", "--store", store],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    key = created.stdout.strip().splitlines()[-1]
    port = _free_port()

    def lower_limit() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    with (tmp_path / "server.log").open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "jobtracker", "serve", "--store", store, "--port", str(port),
             "--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
             *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, preexec_fn=lower_limit,
        )
    _wait_for_port(port)
    return server, port, key


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A server with 2 s header and body timeouts; its port and an owner key."""
    process, port, key = _serve(tmp_path)
    try:
        yield port, key
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get(port: int, key: str, path: str = "/api/v1/jobs/nope") -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": key})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _trickle_headers(port: int, closed_after: list[float], stop: threading.Event) -> None:
    """Send a request head a header every 0.3 s, never ending it; note when the server hangs up."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.3)
        sock.sendall(b"GET /api/v1/jobs/x HTTP/1.1\r\nHost: localhost\r\n")
        n = 0
        while not stop.is_set():
            try:
                sock.sendall(b"X-Slow-%d: y\r\n" % n)
                if sock.recv(1024) == b"":
                    break
            except TimeoutError:
                n += 1
                continue
            except OSError:
                break
        closed_after.append(time.monotonic() - began)


def test_trickling_clients_are_closed_while_others_are_served(server: tuple[int, str]) -> None:
    """50 sockets sending a header every 0.3 s are closed within the header timeout, and a
    normal GET answers meanwhile."""
    port, key = server
    closed_after: list[float] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_trickle_headers, args=(port, closed_after, stop))
        for _ in range(TRICKLERS)
    ]
    for thread in threads:
        thread.start()
    try:
        assert _get(port, key) == 404  # served at once: the route answers, the job is unknown
        for thread in threads:
            thread.join(timeout=HEADER_TIMEOUT + 10)
    finally:
        stop.set()
    assert len(closed_after) == TRICKLERS
    assert max(closed_after) < HEADER_TIMEOUT + 2.0, sorted(closed_after)[-5:]
    assert _get(port, key) == 404


def test_a_body_that_trickles_is_answered_408(server: tuple[int, str]) -> None:
    """A POST whose body stops coming is answered 408 with a detail after the body timeout."""
    port, key = server
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + 10) as sock:
        sock.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: localhost\r\nX-API-Key: %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"job_id\""
            % key.encode()
        )
        answer = sock.recv(65536)
    elapsed = time.monotonic() - began
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert orjson.loads(body)["detail"] == f"Request body not received within {BODY_TIMEOUT:g} s"
    assert BODY_TIMEOUT - 0.5 < elapsed < BODY_TIMEOUT + 2.0
    assert _get(port, key, "/api/v1/jobs/x") == 404  # nothing was created


def test_the_open_files_limit_is_raised_to_the_hard_limit_and_logged(tmp_path: Path) -> None:
    """The server raises its soft descriptor limit to the hard one and says the figure."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    process, _, _ = _serve(tmp_path)
    process.terminate()
    process.wait(timeout=30)
    assert f"open files limit: {hard}" in (tmp_path / "server.log").read_text()


def test_running_out_of_descriptors_logs_once_a_second_and_recovers(tmp_path: Path) -> None:
    """With 64 descriptors and 150 clients connecting, accept failures are logged at most once
    a second without tracebacks, and the server answers again once the clients leave."""
    process, port, key = _serve(tmp_path, limit=64)
    sockets: list[socket.socket] = []
    try:
        began = time.monotonic()
        while time.monotonic() - began < 3.0:
            for _ in range(150 - len(sockets)):
                try:
                    sockets.append(socket.create_connection(("127.0.0.1", port), timeout=1))
                except OSError:
                    break
            time.sleep(0.05)  # keep knocking while the server has no descriptor left
        held_for = time.monotonic() - began
        for sock in sockets:
            sock.close()
        sockets.clear()
        deadline = time.monotonic() + 15
        while _get_or_none(port, key) != 404:
            assert time.monotonic() < deadline, "the server did not recover"
        assert process.poll() is None
    finally:
        for sock in sockets:
            sock.close()
        process.terminate()
        process.wait(timeout=30)
    log = (tmp_path / "server.log").read_text()
    reports = log.count("cannot accept connections")
    assert 1 <= reports <= held_for + 2, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def _get_or_none(port: int, key: str) -> int | None:
    try:
        return _get(port, key)
    except OSError:
        return None
