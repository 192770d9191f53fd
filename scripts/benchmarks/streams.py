"""Many waiters: 10,000 event streams (`GET /api/v1/jobs/{id}/stream`) on one server process.

Three figures, each with a target in absolute numbers (the ratio to a bare aiohttp server doing
the least the same job needs is reported beside it, but the target judges the absolute figure):

`streams-rss`: bytes of server RSS per idle stream, 10,000 streams over 1,000 jobs (10 each):
RSS with them open less RSS before, over N. Reference: a bare aiohttp app holding the same
number of prepared streaming responses that sent the same first bytes. Target <= 10 KB.

`streams-fanout`: ms from an acknowledged append (written straight into the SQLite file by this
process, as an SDK worker on the direct transport does; the server hears of it through its change
feed) to each of 10,000 streams of that job holding the new event; p50/p99/max over every
(append, stream). Reference: the bare app writing the same bytes to its 10,000 streams, timed from
the moment it starts. Target p99 <= 500 ms.

`streams-cpu`: server CPU µs per delivered update: 1,000 jobs each watched by 10 streams, 1,000
appends a second spread over the jobs (by this process, straight into the file, group-committed),
server CPU time from /proc over the window divided by the events the clients received in it.
Reference: the bare app pushing the same bytes to the same streams from an in-process timer.
Target <= 50 µs.

The clients are raw asyncio protocols (no aiohttp session per stream) in two processes, each
holding half the streams, so that the client side costs little beside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from jobtracker.domain.events import NewEvent, ProgressReported, new_event_id
from jobtracker.server.limits import raise_open_files_limit
from jobtracker.store.sqlite import SqliteStore
from jobtracker.store.sqlite.log import SqliteLog

from .base import BenchConfig, Benchmark, Round
from .httpload import fetch, free_port, python, serving
from .waiting import seed_started_jobs

BIG_TOTAL = 10**9
CLIENT_PROCESSES = 2
#: Streams being opened at once by one client process: more would overflow the listen backlog.
OPENING_AT_ONCE = 64
SPAWN = multiprocessing.get_context("spawn")
#: The first bytes every stream sends, before its first event (the bare app sends them too).
RETRY_LINE = b"retry: 2000\n\n"


# --- the client side: raw asyncio protocols in child processes ------------------------------


class _Tally:
    """What one client process saw: every event's arrival time while recording, and a count."""

    def __init__(self) -> None:
        self.delivered = 0
        self.recording = False
        self.arrivals: dict[int, list[float]] = {}
        self.lost = 0


class _StreamProtocol(asyncio.Protocol):
    """One event stream: sends the request, notes each `id:` line's arrival."""

    def __init__(self, request: bytes, tally: _Tally, subscribed: asyncio.Future[None]) -> None:
        self._request = request
        self._tally = tally
        self._subscribed = subscribed
        self._pending = b""
        self._events = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            if line.startswith(b"id: "):
                self._event(int(line[4:]), now)

    def _event(self, version: int, now: float) -> None:
        self._events += 1
        if self._events == 1:  # the job as it was at subscription: the stream is ready
            if not self._subscribed.done():
                self._subscribed.set_result(None)
            return
        self._tally.delivered += 1
        if self._tally.recording:
            self._tally.arrivals.setdefault(version, []).append(now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._tally.lost += 1
        if not self._subscribed.done():
            self._subscribed.set_exception(ConnectionError(f"stream closed early: {exc}"))


async def _open_streams(port: int, paths: Sequence[str], secret: str,
                        tally: _Tally) -> list[_StreamProtocol]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(OPENING_AT_ONCE)
    opened: list[_StreamProtocol] = []

    async def open_one(path: str) -> None:
        request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                   f"X-API-Key: {secret}\r\nAccept: text/event-stream\r\n\r\n").encode()
        async with gate:
            subscribed = loop.create_future()
            _, protocol = await loop.create_connection(
                lambda: _StreamProtocol(request, tally, subscribed), "127.0.0.1", port)
            opened.append(protocol)
            await asyncio.wait_for(subscribed, 60)

    await asyncio.gather(*(open_one(path) for path in paths))
    return opened


async def _serve_orders(conn: Connection, port: int, paths: Sequence[str], secret: str) -> None:
    tally = _Tally()
    streams = await _open_streams(port, paths, secret, tally)
    conn.send(len(streams))
    loop = asyncio.get_running_loop()
    orders: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: orders.put_nowait(conn.recv()))
    while (order := await orders.get()) != "stop":
        if order == "count":
            conn.send((tally.delivered, tally.lost))
        elif order == "record":
            tally.recording = True
            conn.send(None)
        elif order == "arrivals":
            conn.send(tally.arrivals)
    loop.remove_reader(conn.fileno())
    for stream in streams:
        if stream.transport is not None:
            stream.transport.abort()
    conn.send(None)


def _client_main(conn: Connection, port: int, paths: Sequence[str], secret: str) -> None:
    """A client process: open the streams, say how many, then answer the parent's orders."""
    raise_open_files_limit()
    try:
        asyncio.run(_serve_orders(conn, port, paths, secret))
    except Exception as exc:
        conn.send(exc)
        raise


class Clients:
    """The client processes, and the parent's side of their pipes."""

    def __init__(self, port: int, paths: Sequence[str], secret: str) -> None:
        self._pipes: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        for share in range(CLIENT_PROCESSES):
            parent, child = SPAWN.Pipe()
            process = SPAWN.Process(target=_client_main, daemon=True,
                                    args=(child, port, paths[share::CLIENT_PROCESSES], secret))
            process.start()
            self._pipes.append(parent)
            self._processes.append(process)

    def wait_open(self, timeout: float) -> int:
        """Streams open and subscribed, once every client has opened all of its own."""
        return sum(self._answer(pipe, timeout) for pipe in self._pipes)

    def ask(self, order: str, timeout: float = 60) -> list[Any]:
        """Every client's answer to `order`."""
        for pipe in self._pipes:
            pipe.send(order)
        return [self._answer(pipe, timeout) for pipe in self._pipes]

    def delivered(self) -> int:
        """Events received after each stream's first, by all clients so far."""
        answers = self.ask("count")
        lost = sum(lost for _, lost in answers)
        if lost:
            raise RuntimeError(f"{lost} streams closed while they were measured")
        return sum(delivered for delivered, _ in answers)

    @staticmethod
    def _answer(pipe: Connection, timeout: float) -> Any:
        if not pipe.poll(timeout):
            raise RuntimeError(f"a stream client did not answer within {timeout:g} s")
        answer = pipe.recv()
        if isinstance(answer, Exception):
            raise RuntimeError(f"a stream client failed: {answer!r}")
        return answer

    def close(self) -> None:
        """Stop every client (they abort their connections) and reap them."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for process in self._processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()


@contextlib.contextmanager
def clients(port: int, paths: Sequence[str], secret: str) -> Iterator[Clients]:
    """Client processes holding one stream per path, all open and subscribed."""
    group = Clients(port, paths, secret)
    try:
        opened = group.wait_open(timeout=30 + len(paths) / 100)
        if opened != len(paths):
            raise RuntimeError(f"{opened} of {len(paths)} streams opened")
        yield group
    finally:
        group.close()


# --- the reference: a bare aiohttp app holding streaming responses --------------------------


def _bare_main(port: int, secret: str, event: bytes, orders: Connection) -> None:
    """The reference server: streams that send the same first bytes, pushed to on order."""
    from aiohttp import web

    raise_open_files_limit()
    streams: dict[str, list[web.StreamResponse]] = {}
    versions: dict[str, int] = {}

    async def stream(request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-API-Key") != secret:
            raise web.HTTPUnauthorized()
        job_id = request.match_info["job_id"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(RETRY_LINE)
        await response.write(b"id: 1\n" + event)
        streams.setdefault(job_id, []).append(response)
        await asyncio.get_running_loop().create_future()  # held until the client leaves
        return response

    async def push(job_id: str) -> None:
        versions[job_id] = version = versions.get(job_id, 1) + 1
        data = b"id: %d\n%s" % (version, event)
        for response in streams.get(job_id, ()):
            await response.write(data)

    async def steadily(rate: float, seconds: float) -> None:
        jobs, loop = list(streams), asyncio.get_running_loop()
        started, sent = loop.time(), 0
        while (elapsed := loop.time() - started) < seconds:
            while sent < elapsed * rate:
                await push(jobs[sent % len(jobs)])
                sent += 1
            await asyncio.sleep(0.01)
        orders.send(sent)

    async def obey(app: web.Application) -> Any:
        loop = asyncio.get_running_loop()
        running: list[asyncio.Task[None]] = []

        def order() -> None:
            what = orders.recv()
            if what[0] == "push":
                began = time.monotonic()
                loop.create_task(push(what[1])).add_done_callback(
                    lambda _: orders.send(began))
            elif what[0] == "steadily":
                running.append(loop.create_task(steadily(what[1], what[2])))

        loop.add_reader(orders.fileno(), order)
        yield
        loop.remove_reader(orders.fileno())

    app = web.Application()
    app.router.add_get("/api/v1/jobs/{job_id}/stream", stream)
    app.cleanup_ctx.append(obey)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None,
                shutdown_timeout=1)


@contextlib.contextmanager
def bare_server(secret: str, event: bytes) -> Iterator[tuple[int, int, Connection]]:
    """(pid, port, order pipe) of the reference server, once it accepts connections."""
    port = free_port()
    parent, child = SPAWN.Pipe()
    process = SPAWN.Process(target=_bare_main, args=(port, secret, event, child), daemon=True)
    process.start()
    try:
        _wait_for_port(port, process)
        assert process.pid is not None
        yield process.pid, port, parent
    finally:
        process.terminate()
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()


def _wait_for_port(port: int, process: multiprocessing.process.BaseProcess) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not process.is_alive():
            raise RuntimeError(f"the bare server exited with {process.exitcode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the bare server did not listen in time")


# --- the subject: `jobtracker serve` on a SQLite file ---------------------------------------


@contextlib.contextmanager
def jobtracker_server(workdir: str, jobs: int) -> Iterator[tuple[int, int, str, list[str], str]]:
    """(pid, port, key, job ids, database) of a `jobtracker serve` with `jobs` started jobs."""
    db = str(Path(tempfile.mkdtemp(dir=workdir)) / "streams.db")
    secret, ids = seed_started_jobs(db, jobs, "stream")
    port = free_port()
    cmd = [python(), "-m", "jobtracker", "serve", "--store", f"sqlite:///{db}",
           "--port", str(port), "--webhooks", "off", "--no-metrics"]
    with serving(cmd, Path(db).with_suffix(".log")) as server:
        yield server.pid, port, secret, ids, db


def _event_bytes(port: int, secret: str, job_id: str) -> bytes:
    """What the subject sends for a running job, less its `id:` line: the bare app's payload."""
    status, body = fetch(f"http://127.0.0.1:{port}/api/v1/jobs/{job_id}", {"X-API-Key": secret})
    assert status == 200, body
    return b"data: %s\n\n" % body


def _paths(ids: Sequence[str], per_job: int) -> list[str]:
    return [f"/api/v1/jobs/{job_id}/stream" for job_id in ids for _ in range(per_job)]


# --- measuring ------------------------------------------------------------------------------


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/{pid}/status")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settled_rss(pid: int) -> int:
    """RSS once it stops moving (the server may still be finishing the last openings)."""
    previous = _rss_bytes(pid)
    for _ in range(20):
        time.sleep(0.5)
        now = _rss_bytes(pid)
        if abs(now - previous) < 64 * 1024:
            return now
        previous = now
    return previous


def _per_stream_rss(pid: int, port: int, paths: Sequence[str], secret: str) -> float:
    # A few streams first, closed again: the first stream's imports and caches are not per stream.
    with clients(port, paths[:CLIENT_PROCESSES * 8], secret):
        pass
    before = _settled_rss(pid)
    with clients(port, paths, secret):
        held = _settled_rss(pid)
    return (held - before) / len(paths)


def _sizes(config: BenchConfig) -> tuple[int, int]:
    """(jobs, streams per job) of the steady layout."""
    return (100, 10) if config.quick else (1000, 10)


def run_rss(config: BenchConfig) -> Round:
    """Bytes per idle stream, subject then reference."""
    jobs, per_job = _sizes(config)
    with jobtracker_server(config.workdir, jobs) as (pid, port, secret, ids, _):
        event = _event_bytes(port, secret, ids[0])
        subject = _per_stream_rss(pid, port, _paths(ids, per_job), secret)
    with bare_server(secret, event) as (pid, port, _):
        reference = _per_stream_rss(pid, port, _paths(ids, per_job), secret)
    return Round(subject=subject, reference=reference,
                 extras={"streams": jobs * per_job, "kb_per_stream": subject / 1024})


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _latencies(group: Clients, started: dict[int, float], streams: int) -> list[float]:
    """ms from each push's start to each stream's arrival; every stream must have had each."""
    arrivals: dict[int, list[float]] = {}
    for answer in group.ask("arrivals"):
        for version, times in answer.items():
            arrivals.setdefault(version, []).extend(times)
    latencies = []
    for version, began in started.items():
        got = arrivals.get(version, [])
        if len(got) != streams:
            raise RuntimeError(f"version {version} reached {len(got)} of {streams} streams")
        latencies += [(at - began) * 1000 for at in got]
    return latencies


def _fanout_subject(config: BenchConfig, streams: int, appends: int) -> tuple[list[float], bytes]:
    with jobtracker_server(config.workdir, 1) as (_, port, secret, ids, db):
        event = _event_bytes(port, secret, ids[0])
        with clients(port, _paths(ids, streams), secret) as group:
            group.ask("record")
            log = SqliteLog(db)
            acked = {}
            for n in range(appends):
                batch = [NewEvent(new_event_id(), ProgressReported(n + 1, BIG_TOTAL))]
                version = log.append(ids[0], batch).version
                acked[version] = time.monotonic()
                time.sleep(2.0)
            log.close()
            return _latencies(group, acked, streams), event


def _fanout_reference(event: bytes, streams: int, appends: int) -> list[float]:
    secret = "bare-key"
    with (bare_server(secret, event) as (_, port, orders),
          clients(port, _paths(["stream-0"], streams), secret) as group):
        group.ask("record")
        started = {}
        for version in range(2, appends + 2):
            orders.send(("push", "stream-0"))
            if not orders.poll(60):
                raise RuntimeError("the bare server did not push in time")
            started[version] = orders.recv()
            time.sleep(2.0)
        return _latencies(group, started, streams)


def run_fanout(config: BenchConfig) -> Round:
    """p99 ms from an append to each of the job's streams holding it, subject then reference."""
    streams, appends = (1000, 3) if config.quick else (10_000, 5)
    subject, event = _fanout_subject(config, streams, appends)
    reference = _fanout_reference(event, streams, appends)
    p99 = _percentile(subject, 0.99)
    return Round(subject=p99, reference=_percentile(reference, 0.99), extras={
        "streams": streams, "appends": appends, "p50_ms": _percentile(subject, 0.5),
        "p99_ms": p99, "max_ms": max(subject), "bare_p50_ms": _percentile(reference, 0.5),
        "bare_max_ms": max(reference)})


async def _append_steadily(db: str, ids: Sequence[str], rate: float, seconds: float) -> int:
    """`rate` appends a second to random jobs for `seconds`, group-committed; how many."""
    store = SqliteStore(db)
    await store.open()
    loop = asyncio.get_running_loop()
    started, sent, pending = loop.time(), 0, set()
    try:
        while (elapsed := loop.time() - started) < seconds:
            while sent < elapsed * rate:
                sent += 1
                event = ProgressReported(sent, BIG_TOTAL)
                batch = [NewEvent(new_event_id(), event)]
                pending.add(asyncio.ensure_future(store.append(random.choice(ids), batch)))
            done = {task for task in pending if task.done()}
            for task in done:
                task.result()
            pending -= done
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
    finally:
        await store.close()
    return sent


def _cpu_window(pid: int, group: Clients, push: Any, seconds: float) -> tuple[float, int, int]:
    """(CPU s, updates delivered, updates pushed) over a window of `push` running."""
    delivered, cpu = group.delivered(), _cpu_seconds(pid)
    pushed = push()
    time.sleep(1.0)  # the last pushes still on their way
    used = _cpu_seconds(pid) - cpu
    return used, group.delivered() - delivered, pushed


def run_cpu(config: BenchConfig) -> Round:
    """µs of server CPU per delivered update, subject then reference."""
    jobs, per_job = _sizes(config)
    rate, seconds = (float(jobs), 3.0) if config.quick else (1000.0, 10.0)
    with jobtracker_server(config.workdir, jobs) as (pid, port, secret, ids, db):
        event = _event_bytes(port, secret, ids[0])
        with clients(port, _paths(ids, per_job), secret) as group:
            used, delivered, sent = _cpu_window(
                pid, group, lambda: asyncio.run(_append_steadily(db, ids, rate, seconds)), seconds)

    def push() -> int:
        orders.send(("steadily", rate, seconds))
        if not orders.poll(seconds + 60):
            raise RuntimeError("the bare server did not finish pushing")
        pushed: int = orders.recv()
        return pushed

    with (bare_server(secret, event) as (bare_pid, bare_port, orders),
          clients(bare_port, _paths(ids, per_job), secret) as group):
        bare_used, bare_delivered, _ = _cpu_window(bare_pid, group, push, seconds)
    subject = used / max(1, delivered) * 1e6
    return Round(subject=subject, reference=bare_used / max(1, bare_delivered) * 1e6, extras={
        "us_per_update": subject, "appends": sent, "delivered": delivered,
        "expected": sent * per_job, "server_cpu_s": used, "bare_delivered": bare_delivered})


BENCHMARKS = [
    Benchmark(
        name="streams-rss",
        subject="server RSS bytes per idle event stream, 10,000 streams over 1,000 jobs",
        reference="bare aiohttp app holding as many prepared streaming responses",
        unit="bytes",
        target="<= 10 KB (10,240 bytes) per stream, absolute; the ratio is for information",
        run=run_rss,
        meets=lambda ratio, extras: extras["kb_per_stream"] <= 10,
        higher_is_better=False,
    ),
    Benchmark(
        name="streams-fanout",
        subject="p99 ms from an acknowledged append (another writer, straight into SQLite) to "
        "each of 10,000 streams of that job holding it",
        reference="p99 ms of the bare app writing the same bytes to its 10,000 streams",
        unit="ms",
        target="p99 <= 500 ms, absolute; the ratio is for information",
        run=run_fanout,
        meets=lambda ratio, extras: extras["p99_ms"] <= 500,
        higher_is_better=False,
    ),
    Benchmark(
        name="streams-cpu",
        subject="server CPU µs per delivered update, 1,000 jobs x 10 streams, 1,000 appends/s "
        "by another writer",
        reference="bare aiohttp app pushing the same bytes to the same streams from a timer",
        unit="µs",
        target="<= 50 µs per update, absolute; the ratio is for information",
        run=run_cpu,
        meets=lambda ratio, extras: extras["us_per_update"] <= 50,
        higher_is_better=False,
    ),
]
