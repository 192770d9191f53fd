"""The Celery integration's cost: a task reporting 10,000 rows through `jobtracker.celery`
(HTTP transport, `jobtracker serve` on SQLite) against the same task reporting nothing, each row
1 ms of simulated work, both in one real solo worker in the same round, in alternating order.
Each side is timed from `apply_async` to its result (the Redis result backend)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from jobtracker.store import make_store
from jobtracker.store.keys import issue_key

from .base import BenchConfig, Benchmark, Round
from .get import jobtracker_server

BROKER = os.environ.get("JOBTRACKER_CELERY_BROKER", "redis://127.0.0.1:6379/14")
SCRIPTS = Path(__file__).resolve().parents[1]


async def _key(url: str) -> str:
    store = make_store(url)
    await store.open()
    try:
        return (await issue_key(store, "bench")).secret
    finally:
        await store.close()


@contextlib.contextmanager
def _worker(env: dict[str, str], log: Path) -> Iterator[None]:
    cmd = [sys.executable, "-m", "celery", "-A", "benchmarks.celery_app", "worker", "--pool",
           "solo", "-Q", env["BENCH_CELERY_QUEUE"], "-n", f"{env['BENCH_CELERY_QUEUE']}@%h",
           "--loglevel", "INFO", "--logfile", str(log), "--without-gossip", "--without-mingle"]
    worker = subprocess.Popen(cmd, cwd=SCRIPTS, env=env)
    try:
        deadline = time.monotonic() + 60
        while not (log.exists() and " ready." in log.read_text()):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"the Celery worker did not start; see {log}")
            time.sleep(0.05)
        yield
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def _timed(task: object, rows: int, queue: str) -> float:
    began = time.perf_counter()
    task.apply_async(args=(rows,), queue=queue).get(timeout=600)  # type: ignore[attr-defined]
    return time.perf_counter() - began


def run(config: BenchConfig) -> Round:
    """One round: the tracked task and the plain one, each once, in alternating order."""
    rows = 500 if config.quick else 10_000
    with tempfile.TemporaryDirectory(dir=config.workdir) as tmp:
        workdir = Path(tmp)
        store_url = f"sqlite:///{workdir / 'celery-bench.db'}"
        key = asyncio.run(_key(store_url))
        with jobtracker_server(store_url, workdir) as base_url:
            queue = f"jt-bench-{os.getpid()}-{secrets.token_hex(4)}"
            env = {**os.environ, "BENCH_CELERY_BROKER": BROKER, "BENCH_CELERY_QUEUE": queue,
                   "JOBTRACKER_URL": base_url, "JOBTRACKER_API_KEY": key}
            os.environ.update({k: env[k] for k in ("JOBTRACKER_URL", "JOBTRACKER_API_KEY")})
            sys.path.insert(0, str(SCRIPTS))
            from benchmarks import celery_app

            celery_app.app.conf.update(broker_url=BROKER, result_backend=BROKER)
            celery_app.app.conf.update(jobtracker_url=base_url, jobtracker_api_key=key)
            with _worker(env, workdir / "worker.log"):
                _timed(celery_app.plain_rows, 10, queue)  # warm both sides up
                _timed(celery_app.tracked_rows, 10, queue)
                order = [celery_app.tracked_rows, celery_app.plain_rows]
                if secrets.randbelow(2):
                    order.reverse()
                times = {task: _timed(task, rows, queue) for task in order}
    return Round(times[celery_app.tracked_rows], times[celery_app.plain_rows],
                 extras={"rows": float(rows)})


def _unavailable() -> str | None:
    try:
        redis.Redis.from_url(BROKER, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return f"no Redis at {BROKER} ({exc})"
    return None


BENCHMARKS = [
    Benchmark(
        name="celery-rows",
        subject="Celery task, 10,000 rows of 1 ms, each reported via jobtracker.celery (HTTP)",
        reference="the same task reporting nothing, same worker, same round",
        unit="s",
        target="<= 1.15x the reference",
        run=run,
        meets=lambda ratio, _: ratio <= 1.15,
        higher_is_better=False,
        unavailable=_unavailable,
    )
]
