"""A reader tailing the log by position never skips an event, however commits interleave."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from jobtracker.domain.events import Created, NewEvent, RowSucceeded, Started
from jobtracker.store.postgres import PostgresStore
from tests.postgres.conftest import OpenStore

#: Rounds of the gap test; raise it (e.g. 20000) for a long soak.
GAP_ROUNDS = int(os.environ.get("JOBTRACKER_GAP_ROUNDS", "1000"))
#: Rounds of the gap test whose racing writer creates a job.
CREATION_ROUNDS = max(1, GAP_ROUNDS // 4)
#: Longest one round may take, on a slow shared machine, before the test fails instead of hanging.
ROUND_SECONDS = 30.0


class CommitGate:
    """Holds a store's next commit open, after its positions are drawn, until released."""

    def __init__(self) -> None:
        self.armed = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    def arm(self) -> None:
        self.armed = True
        self.reached.clear()
        self.release.clear()

    async def __call__(self) -> None:
        if self.armed:
            self.armed = False
            self.reached.set()
            await self.release.wait()


async def tail(store: PostgresStore, positions: list[int]) -> None:
    """Read the log after the last position seen, the way a tailing reader does."""
    while batch := await store.read_log(positions[-1] if positions else 0, 100):
        positions.extend(event.position for event in batch)


def rows(prefix: str, first: int, count: int) -> list[NewEvent]:
    return [
        NewEvent(f"{prefix}-{row}", RowSucceeded(row, f"r{row}@uni.edu", internal=True))
        for row in range(first, first + count)
    ]


async def blocked_on_a_position(probe: asyncpg.Connection) -> bool:
    """Whether a session of this test's database waits for an advisory lock (the position lock)."""
    return bool(await probe.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ))


async def waiting_for_a_position(probe: asyncpg.Connection, racing: asyncio.Task[object]) -> bool:
    """Whether `racing` ends up blocked on the position lock (pg_locks shows it waiting) rather
    than finishing without it. Only a bound on the whole round limits how long this looks."""
    while not racing.done():
        if await blocked_on_a_position(probe):
            return True
        await asyncio.sleep(0.0005)
    return False


@contextlib.asynccontextmanager
async def one_round(gate: CommitGate, n: int) -> AsyncIterator[None]:
    """A round of a gap test: bounded in time, and the held commit released however it ends, so a
    failing round fails the test instead of leaving a transaction open and the test hanging."""
    try:
        async with asyncio.timeout(ROUND_SECONDS):
            yield
    except TimeoutError:
        raise AssertionError(f"round {n} took over {ROUND_SECONDS} s") from None
    finally:
        gate.release.set()


async def finish(*tasks: asyncio.Task[Any]) -> None:
    """Wait for the round's writers, released or not, so none outlives a failed round."""
    async with asyncio.timeout(ROUND_SECONDS):
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_tailing_reader_never_skips_an_event_committed_late(
    open_store: OpenStore, pg_url: str
) -> None:
    """Round after round, a writer asks for a position while another holds a lower one uncommitted.

    The holder commits last of the two; a reader tailing by position in between must still see
    every event, in order, exactly once.
    """
    gate = CommitGate()
    slow = await open_store(before_commit=gate)
    fast = await open_store()
    await slow.create_job("slow-job", Created(owner="key_a"))
    await fast.create_job("fast-job", Created(owner="key_b"))
    seen: list[int] = []
    probe = await asyncpg.connect(pg_url)
    try:
        for n in range(GAP_ROUNDS):
            gate.arm()
            held = asyncio.create_task(slow.append("slow-job", rows("s", 2 * n, 2)))
            racing: asyncio.Task[Any] | None = None
            try:
                async with one_round(gate, n):
                    await gate.reached.wait()
                    racing = asyncio.create_task(fast.append("fast-job", rows("f", n, 1)))
                    assert await waiting_for_a_position(probe, racing), f"round {n}: no race"
                    await tail(fast, seen)
                    gate.release.set()
                    await asyncio.gather(held, racing)
                    await tail(fast, seen)
            finally:
                await finish(held, *([racing] if racing else []))
    finally:
        await probe.close()
    everything = [event.position for event in await fast.read_log(0, 10 * GAP_ROUNDS + 10)]
    assert seen == everything
    assert len(everything) == 2 + 3 * GAP_ROUNDS


async def test_tailing_reader_never_skips_an_event_when_creations_race_appends(
    open_store: OpenStore, pg_url: str
) -> None:
    """Job creations take positions too: round after round, a job is created while an append
    holds a lower position uncommitted. The creation waits for the position lock, so a reader
    tailing by position in between still sees every event, the `created` ones among them."""
    gate = CommitGate()
    slow = await open_store(before_commit=gate)
    fast = await open_store()
    await slow.create_job("slow-job", Created(owner="key_a"))
    seen: list[int] = []
    raced = 0
    probe = await asyncpg.connect(pg_url)
    try:
        for n in range(CREATION_ROUNDS):
            gate.arm()
            held = asyncio.create_task(slow.append("slow-job", rows("s", 2 * n, 2)))
            creating: asyncio.Task[Any] | None = None
            try:
                async with one_round(gate, n):
                    await gate.reached.wait()
                    creating = asyncio.create_task(
                        fast.create_job(f"new-{n}", Created(owner="key_b")))
                    raced += await waiting_for_a_position(probe, creating)
                    await tail(fast, seen)
                    gate.release.set()
                    await asyncio.gather(held, creating)
                    await tail(fast, seen)
            finally:
                await finish(held, *([creating] if creating else []))
    finally:
        await probe.close()
    everything = [event.position for event in await fast.read_log(0, 10 * CREATION_ROUNDS + 10)]
    assert seen == everything, f"the reader skipped {sorted(set(everything) - set(seen))[:10]}"
    assert len(everything) == 1 + 3 * CREATION_ROUNDS
    assert raced == CREATION_ROUNDS, f"only {raced} creations waited for the position lock"


async def test_a_writer_bypassing_the_position_lock_would_make_readers_skip(
    open_store: OpenStore, pg_url: str
) -> None:
    """The gap test can fail: an insert that skips the lock overtakes a held commit, seen first."""
    gate = CommitGate()
    slow = await open_store(before_commit=gate)
    await slow.create_job("slow-job", Created(owner="key_a"))
    seen: list[int] = []
    rogue = await asyncpg.connect(pg_url)
    try:
        for n in range(20):
            gate.arm()
            held = asyncio.create_task(slow.append("slow-job", rows("s", n, 1)))
            try:
                async with one_round(gate, n):
                    await gate.reached.wait()
                    await rogue.execute(
                        "INSERT INTO events (job_id, version, event_id, type, data) "
                        "VALUES ('rogue-job', $1, $2, 'started', '{}')",
                        n + 1,
                        f"rogue-{n}",
                    )
                    await tail(slow, seen)
                    gate.release.set()
                    await held
                    await tail(slow, seen)
            finally:
                await finish(held)
    finally:
        await rogue.close()
    everything = [event.position for event in await slow.read_log(0, 1000)]
    assert len(set(everything) - set(seen)) == 20


async def test_started_after_created_keeps_position_order_within_a_batch(
    open_store: OpenStore,
) -> None:
    """Inside one batch, positions follow versions."""
    store = await open_store()
    await store.create_job("job", Created(owner="key_a"))
    await store.append("job", [NewEvent("go", Started()), *rows("r", 0, 500)])
    events = await store.read_job_events("job", 0, 1000)
    assert [e.version for e in events] == list(range(1, 503))
    assert [e.position for e in events] == sorted(e.position for e in events)
