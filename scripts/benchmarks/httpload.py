"""HTTP load for benchmarks: `wrk` when installed, else a small Python load generator that says so.

Also the plumbing every HTTP benchmark needs: a free port, a server subprocess that is waited for
and always stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import attrs

WRK_MISSING = (
    "wrk is not installed (Debian/Ubuntu: `apt-get update && apt-get install -y wrk`); "
    "a Python load generator stands in, and its figures are not comparable with wrk's"
)


@attrs.frozen
class Load:
    """How hard to push: wrk's threads, connections and seconds."""

    threads: int = 1
    connections: int = 32
    seconds: int = 10
    #: The request's method; its body is always empty.
    method: str = "GET"

    def wrk_flags(self) -> str:
        """The same settings as wrk flags, for tables and notes."""
        return f"-t{self.threads} -c{self.connections} -d{self.seconds}s --latency"


@attrs.frozen
class LoadResult:
    """What one load run measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    tool: str
    #: Requests that took longer than wrk's timeout (2 s): counted, not failed.
    timeouts: int = 0


def have_wrk() -> bool:
    """Whether `wrk` is on the PATH."""
    return shutil.which("wrk") is not None


def run_load(url: str, headers: dict[str, str], load: Load) -> LoadResult:
    """Load `url` with `wrk` (or the Python stand-in); every answer must be a 2xx."""
    if have_wrk():
        return run_wrk(url, headers, load)
    return asyncio.run(python_load(url, headers, load))


# --- wrk -------------------------------------------------------------------------------------

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"cannot read the wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    """Read req/s, p50 and p99 from `wrk --latency`'s report; refuse non-2xx and broken sockets."""
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if bad:
        raise RuntimeError(f"wrk saw {bad.group(1)} non-2xx answers:\n{output}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    connect, read, write, timeouts = map(int, errors.groups()) if errors else (0, 0, 0, 0)
    # A timeout is the machine being busy; a broken connection is the server misbehaving.
    if connect or read or write:
        raise RuntimeError(f"wrk saw socket errors:\n{output}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.MULTILINE)
    count = re.search(r"(\d+) requests in", output)
    if not (rps and p50 and p99 and count):
        raise RuntimeError(f"cannot read wrk's report:\n{output}")
    return LoadResult(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)),
                      int(count.group(1)), "wrk", timeouts)


def run_wrk(url: str, headers: dict[str, str], load: Load) -> LoadResult:
    """One `wrk --latency` run."""
    cmd = ["wrk", *load.wrk_flags().split()]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    with tempfile.TemporaryDirectory() as folder:
        if load.method != "GET":
            script = Path(folder) / "method.lua"
            script.write_text(f'wrk.method = "{load.method}"\n')
            cmd += ["-s", str(script)]
        done = subprocess.run([*cmd, url], capture_output=True, text=True, check=True,
                              timeout=load.seconds + 30)
    return parse_wrk(done.stdout)


# --- the Python stand-in ---------------------------------------------------------------------


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def _one_connection(
    host: str, port: int, request: bytes, deadline: float, latencies: list[float]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (sent := time.perf_counter()) < deadline:
            writer.write(request)
            status = await _read_answer(reader)
            if not 200 <= status < 300:
                raise RuntimeError(f"the server answered {status}")
            latencies.append(time.perf_counter() - sent)
    finally:
        writer.close()
        await writer.wait_closed()


async def python_load(url: str, headers: dict[str, str], load: Load) -> LoadResult:
    """wrk's measurement, done slowly in Python: keep-alive connections, each request in turn."""
    parsed = urllib.request.urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    request = f"{load.method} {parsed.path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + load.seconds
    await asyncio.gather(*(
        _one_connection(host, port, request, deadline, latencies)
        for _ in range(load.connections)
    ))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return LoadResult(len(ordered) / elapsed, _percentile(ordered, 0.5) * 1000,
                      _percentile(ordered, 0.99) * 1000, len(ordered), "python")


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch(url: str, headers: dict[str, str], timeout: float = 5) -> tuple[int, bytes]:
    """One GET: the status and the body, errors included."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_for_lines(log: Path, marker: str, count: int, server: subprocess.Popen[bytes],
                    deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{server.args} exited with {server.returncode}:\n"
                               f"{log.read_text(errors='replace')}")
        if log.read_text(errors="replace").count(marker) >= count:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{server.args} did not print {marker!r} {count} time(s) in time")


@contextlib.contextmanager
def serving(cmd: Sequence[str], log: Path, *, ready_marker: str = "Running on",
            ready_count: int = 1, timeout: float = 60) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends; ready once its log shows `ready_marker` enough times."""
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_lines(log, ready_marker, ready_count, server, time.monotonic() + timeout)
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def python() -> str:
    """The interpreter running the benchmarks (the project's venv)."""
    return sys.executable
