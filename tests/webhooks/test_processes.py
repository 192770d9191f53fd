"""Real `jobtracker serve` processes: kill -9 during delivery loses nothing, and two servers on
one PostgreSQL database deliver every event, each (nearly always) once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobtracker.store import make_store
from jobtracker.store.keys import issue_key
from tests.conditions import until
from tests.pg_database import drop_schema, new_schema_url, run_database
from tests.reliability.test_crash import ROOT, _free_port
from tests.webhooks.conftest import Receiver

FLAGS = ["--webhook-allow-http", "--webhook-allow-private", "--webhook-lease", "1",
         "--webhook-retry-delays", "0.2,0.5", "--no-metrics"]
KILLS = int(os.environ.get("JOBTRACKER_WEBHOOK_KILLS", "3"))


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store the test's server processes share."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    url = new_schema_url(run_database())
    yield url
    drop_schema(url)


async def owner_key(store_url: str) -> str:
    """Migrate the store and make an owner key; its secret."""
    store = make_store(store_url)
    await store.open()
    try:
        return (await issue_key(store, "owner")).secret
    finally:
        await store.close()


class Server:
    """One `jobtracker serve` process."""

    def __init__(self, store_url: str, log: Path, *extra: str) -> None:
        self.store_url, self.log, self.extra = store_url, log, extra
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, http: aiohttp.ClientSession) -> None:
        """Start and wait until it answers."""
        with self.log.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "jobtracker", "serve", "--store", self.store_url,
                "--port", str(self.port), *FLAGS, *self.extra, stdout=out, stderr=out, cwd=ROOT,
                start_new_session=True,
            )
        for _ in range(600):
            try:
                async with http.get(self.base + "/healthz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        raise AssertionError(f"server on {self.port} did not start: {self.log.read_text()}")

    async def kill(self) -> None:
        """SIGKILL to the server and its webhook process at once: no shutdown, no last write."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()

    def dispatchers(self) -> list[int]:
        """The server's webhook process (multiprocessing's resource tracker aside)."""
        assert self.process is not None
        pid = self.process.pid
        with contextlib.suppress(FileNotFoundError):
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
            return [int(child) for child in text.split()
                    if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()]
        return []

    async def kill_all(self) -> None:
        """SIGKILL whatever is left of the server's process group (a failed test's cleanup)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM, if still running."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            await self.process.wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client for the test's calls to the servers."""
    async with aiohttp.ClientSession() as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, url: str, key: str,
               body: Any = None) -> Any:
    """One API call that must succeed; its JSON body."""
    async with http.request(method, url, json=body, headers={"X-API-Key": key}) as answer:
        assert answer.status < 300, await answer.text()
        return await answer.json()


async def finish_jobs(http: aiohttp.ClientSession, base: str, key: str, count: int) -> set[str]:
    """`count` jobs started and succeeded through `base`; their ids."""
    jobs = set()
    for _ in range(count):
        job_id = (await call(http, "POST", f"{base}/api/v1/jobs", key, {}))["job_id"]
        for kind in ("started", "succeeded"):
            await call(http, "POST", f"{base}/api/v1/jobs/{job_id}/events", key, [{"type": kind}])
        jobs.add(job_id)
    return jobs


def check_every_event_arrived(receiver: Receiver, jobs: set[str]) -> Counter[str]:
    """Each job's started and succeeded arrived, in order; a repeat always under the same id.
    How many times each message id arrived."""
    ids: dict[tuple[str, str], set[str]] = defaultdict(set)
    for got in receiver.received:
        ids[(got.json["data"]["job_id"], got.json["type"])].add(got.msg_id)
    missing = [(j, t) for j in jobs for t in ("job.started", "job.succeeded")
               if (j, t) not in ids]
    assert not missing, f"never delivered: {missing[:5]} (of {len(missing)})"
    assert all(len(found) == 1 for found in ids.values()), "a repeat came under a new id"
    for job_id in jobs:
        types = [r.json["type"] for r in receiver.of_job(job_id)]
        assert types.index("job.started") < types.index("job.succeeded")
    return Counter(r.msg_id for r in receiver.received)


async def test_kill_9_during_delivery_loses_no_event(
    store_url: str, tmp_path: Path, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    """The server is killed while deliveries are in flight (the receiver is slow), KILLS
    times; after each restart delivery goes on, and in the end every event has arrived, a
    repeat only ever under its first `webhook-id`."""
    key = await owner_key(store_url)
    receiver.delay = 0.05
    jobs: set[str] = set()
    server = Server(store_url, tmp_path / "serve.log")
    await server.start(http)
    await call(http, "POST", f"{server.base}/api/v1/webhooks", key,
               {"url": receiver.url, "events": ["job.started", "job.succeeded"]})
    try:
        for _ in range(KILLS):
            before = len(receiver.received)
            jobs |= await finish_jobs(http, server.base, key, 10)
            await until(lambda b=before: len(receiver.received) > b + 3, "deliveries under way")
            await server.kill()  # while the receiver holds some of them
            server = Server(store_url, tmp_path / "serve.log")
            await server.start(http)
        await until(lambda: {r.json["data"]["job_id"] for r in receiver.received
                             if r.json["type"] == "job.succeeded"} >= jobs,
                    lambda: f"{len(receiver.received)} received", within=30)
    finally:
        await server.stop()
    repeats = check_every_event_arrived(receiver, jobs)
    print(f"\n{store_url.split(':')[0]}: {KILLS} kills, {len(repeats)} events, "
          f"{sum(n - 1 for n in repeats.values())} repeated")


@pytest.mark.parametrize("store_url", ["postgres"], indirect=True)
async def test_two_servers_on_postgres_deliver_each_event(
    store_url: str, tmp_path: Path, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    """Two servers on one database, jobs finishing through both: every event arrives, repeats
    are counted (a repeat needs a lease to run out mid-send); then one server is killed and the
    other takes its share over within the lease."""
    key = await owner_key(store_url)
    servers = [Server(store_url, tmp_path / f"serve-{n}.log") for n in range(2)]
    for server in servers:
        await server.start(http)
    try:
        await call(http, "POST", f"{servers[0].base}/api/v1/webhooks", key,
                   {"url": receiver.url, "events": ["job.started", "job.succeeded"]})
        batches = await asyncio.gather(
            *(finish_jobs(http, server.base, key, 25) for server in servers))
        jobs = batches[0] | batches[1]
        await until(lambda: len({r.msg_id for r in receiver.received}) >= 100,
                    lambda: f"{len(receiver.received)} received", within=30)
        repeats = check_every_event_arrived(receiver, jobs)
        duplicates = sum(n - 1 for n in repeats.values())
        print(f"\ntwo servers: {len(repeats)} events, {duplicates} duplicates")

        receiver.delay = 0.2
        more = await finish_jobs(http, servers[1].base, key, 5)
        await servers[1].kill()
        jobs |= more | await finish_jobs(http, servers[0].base, key, 5)
        await until(lambda: {r.json["data"]["job_id"] for r in receiver.received
                             if r.json["type"] == "job.succeeded"} >= jobs,
                    lambda: f"{len(receiver.received)} received", within=30)
        check_every_event_arrived(receiver, jobs)
    finally:
        for server in servers:
            await server.stop()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_webhooks_run_delivers_for_a_server_that_does_not(
    store_url: str, tmp_path: Path, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    """`serve --webhooks off` delivers nothing itself; `jobtracker webhooks run` beside it, on
    the same store, delivers every event."""
    key = await owner_key(store_url)
    server = Server(store_url, tmp_path / "serve.log", "--webhooks", "off")
    await server.start(http)
    log = (tmp_path / "run.log").open("wb")
    runner = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jobtracker", "webhooks", "run", "--store", store_url,
        "--webhook-allow-private", "--webhook-allow-http", stdout=log, stderr=log, cwd=ROOT)
    try:
        await call(http, "POST", f"{server.base}/api/v1/webhooks", key,
                   {"url": receiver.url, "events": ["job.started", "job.succeeded"]})
        jobs = await finish_jobs(http, server.base, key, 5)
        await until(lambda: len(receiver.received) >= 10, lambda: f"{len(receiver.received)}",
                    within=30)
        check_every_event_arrived(receiver, jobs)
    finally:
        runner.send_signal(signal.SIGTERM)
        assert await runner.wait() == 0
        log.close()
        await server.stop()


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_a_killed_server_leaves_no_dispatcher_behind(
    store_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """`serve` delivers from a child process; kill -9 of `serve` alone ends that child too."""
    await owner_key(store_url)
    server = Server(store_url, tmp_path / "serve.log")
    await server.start(http)
    try:
        await until(lambda: bool(server.dispatchers()), "the dispatcher process")
        [child] = server.dispatchers()
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        await server.process.wait()
        await until(lambda: not _alive(child), "the orphaned dispatcher to exit", within=10)
    finally:
        await server.kill_all()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _delivered(metrics: str) -> float:
    """`jobtracker_webhook_deliveries_total{outcome="delivered"}` in a scrape (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith('jobtracker_webhook_deliveries_total{outcome="delivered"}'):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("workers", ["1", "2"])
async def test_metrics_count_what_the_webhook_process_delivered(
    store_url: str, tmp_path: Path, receiver: Receiver, http: aiohttp.ClientSession,
    workers: str,
) -> None:
    """`serve` delivers from a process of its own; its deliveries show at /metrics all the
    same, whichever API process answers the scrape."""
    key = await owner_key(store_url)
    server = Server(store_url, tmp_path / "serve.log", "--metrics", "--workers", workers)
    await server.start(http)
    try:
        await call(http, "POST", f"{server.base}/api/v1/webhooks", key,
                   {"url": receiver.url, "events": ["job.started", "job.succeeded"]})
        jobs = await finish_jobs(http, server.base, key, 3)
        await until(lambda: len(receiver.received) >= 6, lambda: f"{len(receiver.received)}")
        check_every_event_arrived(receiver, jobs)
        scraped = 0.0
        for _ in range(100):  # the count is written just after the receiver's answer
            async with http.get(f"{server.base}/metrics") as answer:
                scraped = _delivered(await answer.text())
            if scraped >= 6:
                break
            await asyncio.sleep(0.05)
        assert scraped >= 6
        async with http.get(f"{server.base}/metrics") as answer:
            text = await answer.text()
        assert text.count("# TYPE jobtracker_webhook_deliveries_total counter") == 1
        assert text.count("# TYPE jobtracker_events_appended_total counter") == 1
    finally:
        await server.stop()
