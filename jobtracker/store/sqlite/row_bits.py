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

from jobtracker.domain.state import RowKind, RowMark

#: Rows per database row: the bits of one signed 64-bit integer.
CHUNK_ROWS = 64
_SHIFT = 6
_LOW = CHUNK_ROWS - 1
_SIGN = 1 << 63

#: (job_id, kind, chunk) -> bits, unsigned while gathered.
Bits = dict[tuple[str, str, int], int]

#: ORs bits in; `{table}` is the live table or a replay's scratch copy of it.
MERGE = (
    "INSERT INTO {table} (job_id, kind, chunk, bits) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (job_id, kind, chunk) DO UPDATE SET bits = bits | excluded.bits"
)
# Live appends set new bits only where none of them is set already: `rowcount` then tells whether
# a mark was refused (the row already had an outcome of that kind).
_MERGE_NEW = MERGE.format(table="job_row_bits") + " WHERE bits & excluded.bits = 0"
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
    # Marks come in row order, mostly of one kind: a run of them in one word is gathered in a
    # local integer and merged into `bits` once, when the word or the kind changes.
    key: tuple[str, str, int] | None = None
    word = chunk = 0
    kind_now = ""  # no mark's kind: the first mark starts a run
    for row, kind in marks:
        if row >> _SHIFT != chunk or kind is not kind_now:
            if key is not None:
                _merge(bits, key, word)
            chunk, kind_now, word = row >> _SHIFT, kind, 0
            key = (job_id, kind, chunk)
        bit = 1 << (row & _LOW)
        if word & bit:
            raise RowMarkedTwice(f"row {row} of job {job_id} has a {kind} mark already")
        word |= bit
    if key is not None:
        _merge(bits, key, word)


def _merge(bits: Bits, key: tuple[str, str, int], word: int) -> None:
    have = bits.get(key, 0)
    if have & word:
        job_id, kind, chunk = key
        row = (chunk << _SHIFT) + (have & word & -(have & word)).bit_length() - 1
        raise RowMarkedTwice(f"row {row} of job {job_id} has a {kind} mark already")
    bits[key] = have | word


def params(bits: Bits) -> list[tuple[str, str, int, int]]:
    """The gathered bits as statement parameters, each a signed 64-bit integer."""
    return [
        (job_id, kind, chunk, value - (1 << 64) if value & _SIGN else value)
        for (job_id, kind, chunk), value in bits.items()
    ]


def write_new(conn: sqlite3.Connection, bits: Bits) -> None:
    """Set the gathered bits; `RowMarkedTwice` (nothing set can be trusted: roll back) if a row
    already had one."""
    rows = params(bits)
    cursor = conn.executemany(_MERGE_NEW, rows)
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
