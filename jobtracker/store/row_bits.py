"""Row marks as bits: how the SQLite store remembers which rows of a job already have an outcome.

A job's marks (one outcome per row, one e-mail outcome per row) live in `job_row_bits`, 64 rows to
a database row: `chunk` is `row >> 6` and bit `row & 63` of `bits` is set once that row has that
kind of outcome. A batch of 1,000 consecutive rows then writes about 16 database rows instead of
1,000, and a million-row job keeps about 16,000 of them instead of a million: a row per mark cost
the SDK's direct writer about a third of its time. Bits are ORed in by SQL (`bits | excluded.bits`)
and the insert refuses to set a bit that is already set, so a second outcome is still caught by
the write itself, as a unique key caught it before.

`bits` is a signed 64-bit integer, as SQLite stores it: bit 63 makes it negative.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator

from jobtracker.state import RowKind, RowMark

#: Rows per database row: the bits of one signed 64-bit integer.
CHUNK_ROWS = 64
_SHIFT = 6
_LOW = CHUNK_ROWS - 1
_SIGN = 1 << 63

#: (job_id, kind, chunk) -> bits, unsigned while gathered.
Bits = dict[tuple[str, str, int], int]

# Sets the new bits, but only where none of them is set already: `rowcount` then tells whether a
# mark was refused (the row already had an outcome of that kind).
MERGE_NEW = (
    "INSERT INTO {table} (job_id, kind, chunk, bits) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (job_id, kind, chunk) DO UPDATE SET bits = bits | excluded.bits "
    "WHERE bits & excluded.bits = 0"
)
# For replay, which only ever adds marks the fold accepted.
MERGE = (
    "INSERT INTO {table} (job_id, kind, chunk, bits) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (job_id, kind, chunk) DO UPDATE SET bits = bits | excluded.bits"
)
#: The marks among some rows of one job: `?1` the job id, `?2` the rows as a JSON array.
SELECT_MARKED = (
    "SELECT r.value, k.kind FROM json_each(?2) AS r, "
    "(SELECT 'outcome' AS kind UNION ALL SELECT 'email') AS k "
    "WHERE EXISTS (SELECT 1 FROM job_row_bits AS b WHERE b.job_id = ?1 AND b.kind = k.kind "
    "AND b.chunk = r.value >> 6 AND b.bits & (1 << (r.value & 63)) != 0)"
)


class RowMarkedTwice(sqlite3.IntegrityError):
    """A row would get a second outcome (or e-mail outcome): what a unique key would refuse."""


def add(bits: Bits, job_id: str, marks: Iterable[RowMark]) -> None:
    """Gather `marks` of one job into `bits`; `RowMarkedTwice` if one is there already."""
    get = bits.get
    for row, kind in marks:
        key = (job_id, kind, row >> _SHIFT)
        bit = 1 << (row & _LOW)
        have = get(key, 0)
        if have & bit:
            raise RowMarkedTwice(f"row {row} of job {job_id} has a {kind} mark already")
        bits[key] = have | bit


def params(bits: Bits) -> list[tuple[str, str, int, int]]:
    """The gathered bits as statement parameters, each a signed 64-bit integer."""
    return [
        (job_id, kind, chunk, value - (1 << 64) if value & _SIGN else value)
        for (job_id, kind, chunk), value in bits.items()
    ]


def write_new(conn: sqlite3.Connection, bits: Bits, table: str = "job_row_bits") -> None:
    """Set the gathered bits; `RowMarkedTwice` (nothing set can be trusted: roll back) if a row
    already had one."""
    rows = params(bits)
    cursor = conn.executemany(MERGE_NEW.format(table=table), rows)
    if cursor.rowcount != len(rows):
        raise RowMarkedTwice("a row already has an outcome of that kind")


def marks_of(chunk: int, kind: RowKind, bits: int) -> Iterator[RowMark]:
    """The marks one database row holds, lowest row first."""
    value = bits & ((1 << 64) - 1)
    base = chunk << _SHIFT
    while value:
        low = value & -value
        yield RowMark(base + low.bit_length() - 1, kind)
        value ^= low
