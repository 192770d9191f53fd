"""Real Celery workers on the Redis at 127.0.0.1:6379 (database 13), a live jobtracker server
in a thread, and the keys of a platform that enqueues tasks for two customers.

Outside CI an unreachable Redis skips these tests with the reason; with CI=true it fails them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
import redis

import jobtracker.celery
from jobtracker.celery.config import close_trackers
from jobtracker.server.app import create_app
from jobtracker.server.settings import Settings
from jobtracker.store import SqliteStore
from jobtracker.store.keys import issue_key
from tests.celery_integration import app as tasks
from tests.sdk.conftest import ServerThread

REDIS_ENV = "JOBTRACKER_TEST_REDIS"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
ROOT = Path(__file__).resolve().parents[2]


def redis_url() -> str:
    """The broker the tests' workers use: database 13 unless told otherwise."""
    return os.environ.get(REDIS_ENV) or DEFAULT_REDIS


@attrs.frozen
class Platform:
    """The server, the SQLite file behind it, and its keys: two owners and a worker key bound
    to both (the platform's backend)."""

    base_url: str
    db_path: str
    owner_key: str
    owner_id: str
    other_key: str
    other_id: str
    worker_key: str


async def _keys(db_path: str) -> tuple[str, str, str, str, str]:
    store = SqliteStore(db_path)
    await store.open()
    try:
        owner = await issue_key(store, "customer")
        other = await issue_key(store, "other customer")
        ids = [owner.record.key_id, other.record.key_id]
        worker = await issue_key(store, "platform", scope="worker", owners=ids)
    finally:
        await store.close()
    return owner.secret, ids[0], other.secret, ids[1], worker.secret


@pytest.fixture(scope="session")
def broker() -> str:
    """The Redis URL, reachable; skipped (failed under CI=true) otherwise."""
    url = redis_url()
    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"Redis is not reachable at {url} ({exc}); set ${REDIS_ENV}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return url


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory, broker: str) -> Iterator[Platform]:
    """A live server on a fresh SQLite file; the test process's Celery app publishes to it."""
    db_path = str(tmp_path_factory.mktemp("celery") / "jobs.db")
    owner, owner_id, other, other_id, worker = asyncio.run(_keys(db_path))
    server = ServerThread(create_app(Settings(store_url=f"sqlite:///{db_path}")))
    server.start()
    base_url = f"http://127.0.0.1:{server.port}"
    tasks.app.conf.broker_url = broker
    jobtracker.celery.setup(tasks.app, url=base_url, api_key=worker)
    yield Platform(base_url, db_path, owner, owner_id, other, other_id, worker)
    close_trackers()
    server.stop()


@attrs.define
class Worker:
    """A `celery worker` process consuming a queue of its own."""

    queue: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Warm shutdown, then a kill if it hangs."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll an observable condition every 50 ms."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def start_worker(
    tmp_path_factory: pytest.TempPathFactory, platform: Platform, broker: str
) -> Iterator[Callable[..., Worker]]:
    """Start real workers (`--pool solo|prefork`), each ready before it is returned."""
    started: list[Worker] = []

    def start(pool: str, url: str | None = None) -> Worker:
        queue = f"jt-test-{os.getpid()}-{secrets.token_hex(4)}"
        log = tmp_path_factory.mktemp("worker") / "worker.log"
        env = {
            **os.environ,
            "TEST_CELERY_BROKER": broker,
            "TEST_CELERY_QUEUE": queue,
            "JOBTRACKER_URL": url or platform.base_url,
            "JOBTRACKER_API_KEY": platform.worker_key,
        }
        command = [
            sys.executable, "-m", "celery", "-A", "tests.celery_integration.app", "worker",
            "--pool", pool, "--concurrency", "1", "-Q", queue, "-n", f"{queue}@%h",
            "--loglevel", "INFO", "--logfile", str(log), "--without-gossip",
            "--without-mingle", "--without-heartbeat",
        ]
        process = subprocess.Popen(command, cwd=ROOT, env=env)
        worker = Worker(queue, process, log)
        started.append(worker)
        wait_for(lambda: log.exists() and " ready." in log.read_text(), 60, f"{queue} ready")
        return worker

    yield start
    for worker in started:
        worker.stop()
    redis.Redis.from_url(broker).flushdb()
