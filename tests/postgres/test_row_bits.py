"""Row marks as bits on PostgreSQL (migration 0009): the upgrade, a second mark, and verify."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from jobtracker.domain.errors import RowAlreadyReported
from jobtracker.domain.events import MAX_INT, Created, EmailSent, NewEvent, RowFailed, RowSucceeded
from jobtracker.store import replay
from tests.postgres.conftest import OpenStore

#: Rows either side of a chunk's sign bit, and far out (chunks beyond 32 bits, the largest row).
ROWS = (0, 63, 64, 127, 2**40 + 5, MAX_INT)

# The marks table as migration 0001 made it, filled from the bits, and 0009 forgotten: the
# database a store at 0008 left (its log and the rest of its projection are the same).
_BACK_TO_0008 = """
CREATE TABLE job_rows (
    job_id TEXT   NOT NULL,
    row    BIGINT NOT NULL,
    kind   TEXT   NOT NULL CHECK (kind IN ('outcome', 'email')),
    PRIMARY KEY (job_id, row, kind)
);
INSERT INTO job_rows
SELECT b.job_id, (b.chunk << 6) + i, b.kind FROM job_row_bits AS b, generate_series(0, 63) AS i
WHERE b.bits & ((1::bigint) << i) <> 0;
DROP TABLE job_row_bits;
DELETE FROM schema_migrations WHERE name LIKE '0009%';
"""


def new(event: RowSucceeded | RowFailed | EmailSent) -> NewEvent:
    return NewEvent(str(uuid.uuid4()), event)


async def sql(url: str, statement: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(statement, *args)
    finally:
        await conn.close()


async def test_marks_written_before_the_bits_migration_still_refuse_a_second_outcome(
    open_store: OpenStore, pg_url: str
) -> None:
    """A database at 0008 with marks one row each (rows 63, 64, 2**40+5 among them) migrates to
    bits: each of those rows still refuses a second outcome, and new rows are taken."""
    store = await open_store()
    await store.create_job("job-1", Created(owner="key_a"))
    await store.append("job-1", [new(RowSucceeded(row, "a@uni.edu", True)) for row in ROWS])
    await store.append("job-1", [new(EmailSent(64, "a@uni.edu"))])
    await store.close()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(_BACK_TO_0008)
        assert await conn.fetchval("SELECT count(*) FROM job_rows") == len(ROWS) + 1
    finally:
        await conn.close()

    store = await open_store()  # migrates
    assert await sql(pg_url, "SELECT to_regclass('job_rows')") == [(None,)]
    chunks = await sql(pg_url, "SELECT kind, chunk, bits FROM job_row_bits ORDER BY kind, chunk")
    assert [tuple(c) for c in chunks] == [
        ("email", 1, 1),
        ("outcome", 0, 1 | -(2**63)),  # rows 0 and 63: bit 63 is the sign
        ("outcome", 1, 1 | -(2**63)),  # rows 64 and 127
        ("outcome", 2**34, 1 << 5),
        ("outcome", MAX_INT >> 6, -(2**63)),
    ]
    for row in ROWS:
        with pytest.raises(RowAlreadyReported, match=f"row {row} "):
            await store.append("job-1", [new(RowFailed(row, "a@uni.edu", "x"))])
    with pytest.raises(RowAlreadyReported, match="row 64 "):
        await store.append("job-1", [new(EmailSent(64, "a@uni.edu"))])
    await store.append("job-1", [new(EmailSent(63, "a@uni.edu")),
                                 new(RowSucceeded(62, "a@uni.edu", True)),
                                 new(RowSucceeded(2**40 + 6, "a@uni.edu", True))])
    with pytest.raises(RowAlreadyReported, match=f"row {2**40 + 6} "):
        await store.append("job-1", [new(RowFailed(2**40 + 6, "a@uni.edu", "x"))])
    comparison = (await replay.verify(store)).comparison
    assert comparison is not None
    assert (comparison.differing, comparison.diffs) == (0, ())


async def test_a_second_mark_in_a_group_of_many_jobs_is_refused_to_its_request_alone(
    open_store: OpenStore,
) -> None:
    """Concurrent appends commit together; the one repeating a row hears `RowAlreadyReported`
    naming it, the others commit, and a re-sent batch is still acknowledged as duplicates."""
    store = await open_store()
    for n in range(6):
        await store.create_job(f"job-{n}", Created(owner="key_a"))
    first = [new(RowSucceeded(63, "a@uni.edu", True)), new(RowSucceeded(64, "a@uni.edu", True))]
    await store.append("job-0", first)
    appends = [store.append(f"job-{n}", [new(RowSucceeded(63, "a@uni.edu", True))])
               for n in range(6)]
    outcomes = await asyncio.gather(*appends, return_exceptions=True)
    assert isinstance(outcomes[0], RowAlreadyReported)
    assert "row 63 " in str(outcomes[0])
    assert all(not isinstance(o, BaseException) for o in outcomes[1:])
    again = await store.append("job-0", first)
    assert again.duplicates == 2


async def test_verify_names_a_mark_changed_by_hand_and_rebuild_restores_it(
    open_store: OpenStore, pg_url: str
) -> None:
    """A chunk corrupted by hand (a bit cleared, another set) shows up as those rows' marks in
    `replay --verify`, and a rebuild puts the chunk right."""
    store = await open_store()
    await store.create_job("job-1", Created(owner="key_a"))
    await store.append("job-1", [new(RowSucceeded(row, "a@uni.edu", True)) for row in (5, 63, 70)])
    # chunk 0 held rows 5 and 63: now rows 5 and 9
    await sql(pg_url, "UPDATE job_row_bits SET bits = (1::bigint << 5) | (1::bigint << 9) "
                      "WHERE kind = 'outcome' AND chunk = 0")
    check = await replay.verify(store)
    assert check.comparison is not None
    assert check.comparison.differing == 1
    described = "\n".join(line for diff in check.comparison.diffs for line in replay.describe(diff))
    assert "row marks only in the live projection: row 9 (outcome)" in described
    assert "row marks only in the log: row 63 (outcome)" in described
    await replay.rebuild(store)
    with pytest.raises(RowAlreadyReported, match="row 63 "):
        await store.append("job-1", [new(RowFailed(63, "a@uni.edu", "x"))])
    await store.append("job-1", [new(RowSucceeded(9, "a@uni.edu", True))])
