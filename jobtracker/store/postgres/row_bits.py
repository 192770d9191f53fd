"""Row marks as bits: how the PostgreSQL store remembers which rows of a job have an outcome.

As in the SQLite store, a job's marks (one outcome per row, one e-mail outcome per row) live in
`job_row_bits` (migration 0009), 64 rows to a table row: `chunk` is `row >> 6` and bit `row & 63`
of `bits` is set once that row has that kind of outcome. A batch of 1,000 rows then writes about
16 table rows instead of 1,000. Bits are ORed in by the append statement itself, which refuses to
set a bit already set (`sql.write_group`), so a second outcome still fails the write, as the
unique key of a row per mark made it fail before.

`bits` is a signed 64-bit integer, PostgreSQL's bigint: bit 63 makes it negative.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jobtracker.domain.state import RowMark

_SHIFT = 6
_LOW = (1 << _SHIFT) - 1
_SIGN = 1 << 63

#: (job_id, kind, chunk) -> bits, unsigned while gathered.
Bits = dict[tuple[str, str, int], int]

#: A scratch area's marks, as (job_id, row, kind) rows: `{table}` is its bits table.
EXPAND = (
    "(SELECT b.job_id, (b.chunk << 6) + i AS row, b.kind FROM {table} AS b, "
    "generate_series(0, 63) AS i WHERE b.bits & ((1::bigint) << i) <> 0) AS m"
)


class RowMarkedTwice(ValueError):
    """Marks gathered for one write set a row's bit twice (the fold lets no batch do that)."""


def add(bits: Bits, job_id: str, marks: Iterable[RowMark]) -> None:
    """Gather `marks` of one job into `bits`; `RowMarkedTwice` if one is there already."""
    for row, kind in marks:
        key = (job_id, kind, row >> _SHIFT)
        bit = 1 << (row & _LOW)
        have = bits.get(key, 0)
        if have & bit:
            raise RowMarkedTwice(f"row {row} of job {job_id} has a {kind} mark already")
        bits[key] = have | bit


def signed(value: int) -> int:
    """Gathered bits as the signed 64-bit integer PostgreSQL stores."""
    return value - (1 << 64) if value & _SIGN else value


def as_json(bits: Bits) -> list[dict[str, Any]]:
    """The gathered bits as rows of `sql.write_group`'s marks document."""
    return [
        {"job_id": job_id, "kind": kind, "chunk": chunk, "bits": signed(value)}
        for (job_id, kind, chunk), value in bits.items()
    ]


def as_columns(bits: Bits) -> tuple[list[str], list[str], list[int], list[int]]:
    """The gathered bits as one array per column (job ids, kinds, chunks, signed bits)."""
    keys = list(bits)
    return (
        [job_id for job_id, _, _ in keys],
        [kind for _, kind, _ in keys],
        [chunk for _, _, chunk in keys],
        [signed(bits[key]) for key in keys],
    )
