"""PostgreSQL's lean log (migration 0010): one `log` row per batch, each event in the stored forms
of `domain/stored.py`.

A batch is what one commit appended to one job: events at consecutive versions and positions,
sharing one time stamp. Its row keeps the last version and position (the first are `n - 1`
below, `n` being the length of `types`), a byte per event for its type and schema version, the
event ids (16 bytes each when all are canonical UUIDs, else their texts), and each event's
positional fields, one per line (JSON never holds a raw newline). The row header and the two
index entries are paid once per batch, and a big batch's data is compressed by TOAST; `log_ids`
and `log_text_ids` keep the ids unique over the whole log.

Here: encoding a batch for the append statement, the reads in position and version order (a page
of events cut out of whole batches), and the migration's data step.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from jobtracker.domain.codec import decode_stored
from jobtracker.domain.events import NewEvent, RecordedEvent
from jobtracker.domain.logfold import Batch, BatchedRows
from jobtracker.domain.stored import (
    FORMS,
    STORED_ROWS,
    form_code,
    form_of,
    pack_event_id,
    positional_data,
    unpack_event_id,
)
from jobtracker.store.postgres.sql import PACKED_IDS, ROUTED_IDS, TEXT_IDS

log = logging.getLogger(__name__)

LEAN_LOG = "0010_lean_log"
#: Events copied per transaction by the migration's data step.
COPY_BATCH = 50_000
#: Most events one `log` row holds when the migration groups old rows (appends write a request's
#: events as one row, however many).
MAX_ROW_EVENTS = 1_000

#: Each event class's one-byte form (`stored.form_code`): every class this version writes has one.
CODES: dict[type, int] = {cls: int(form) for cls, (form, _) in STORED_ROWS.items()}

_ROW = ("job_id, p.last_version, p.last_position, p.recorded_at, p.types, p.uuids, p.texts, "
        "p.odd_types, p.data, p.upto")


def _page(where: str, order: str, key_column: str, data: bool = True) -> str:
    """The batches holding the first $2 events after $1 in `order` (`where` picks the rows), each
    with `upto`: how many of the page's events it and those before it hold.

    The inner LIMIT reads at most $2 rows, each with at least one event; only the rows kept have
    their (compressed) data read."""
    avail = f"least(length(b.types), b.{order} - $1)"
    columns = _ROW if data else "job_id, p.last_version, p.last_position, p.types, p.upto"
    return (
        f"SELECT {columns} FROM ("  # noqa: S608 -- fixed column names only
        f"SELECT b.*, {avail} AS avail, sum({avail}) OVER (ORDER BY b.{order})::bigint AS upto "
        f"FROM (SELECT * FROM log WHERE {where} AND {order} > $1 ORDER BY {order} LIMIT $2) AS b"
        f") AS p JOIN log_jobs k ON k.job_key = p.{key_column} "
        f"WHERE p.upto - p.avail < $2 ORDER BY p.{order}"
    )


#: The page of the log after position $1, $2 events at most.
LOG_PAGE = _page("true", "last_position", "job_key")
#: The same without the events' fields (the change feed).
LOG_HEADS = _page("true", "last_position", "job_key", data=False)
#: The page of job $3's history after version $1, $2 events at most.
JOB_PAGE = _page("job_key = (SELECT job_key FROM log_jobs WHERE job_id = $3)", "last_version",
                 "job_key")


def _range(where: str, order: str) -> str:
    """Replay's page: the batches holding the events whose `order` (position or version) is
    in ($1, $1 + $2], then the first batch past that (its first events make the page when the
    range holds none: a gap of $2 positions or more).

    Two range scans of the index on `order`, reading only the rows they return: the window of
    `_page` reads and sums up to $2 rows (its whole rest of the log, when batches are big) to
    find where the page ends."""
    select = (
        "SELECT k.job_id, b.last_version, b.last_position, b.recorded_at, b.types, b.uuids, "  # noqa: S608
        "b.texts, b.odd_types, b.data FROM log b JOIN log_jobs k ON k.job_key = b.job_key "
        f"WHERE {where} AND "
    )
    return (
        f"SELECT * FROM (({select}b.{order} > $1 AND b.{order} <= $1 + $2) UNION ALL "  # noqa: S608
        f"({select}b.{order} > $1 + $2 ORDER BY b.{order} LIMIT 1)) AS p ORDER BY p.{order}"
    )


#: Replay's pages (`replay_rows`): of the log, after position $1; of job $3, after version $1.
REPLAY_LOG_PAGE = _range("true", "last_position")
REPLAY_JOB_PAGE = _range("b.job_key = (SELECT job_key FROM log_jobs WHERE job_id = $3)",
                         "last_version")


def _cut(row: asyncpg.Record, after: int, limit: int, by_version: bool) -> range:
    """The indexes (0-based, within the batch) of a page row's events that belong to the page."""
    n = len(row["types"])
    last = row["last_version"] if by_version else row["last_position"]
    start = max(0, n - (last - after))
    avail = n - start
    before = row["upto"] - avail
    return range(start, start + min(avail, limit - before))


def _forms(row: asyncpg.Record) -> list[tuple[str, int]]:
    odd = row["odd_types"]
    if odd is not None:
        return [form_of(text) for text in odd.split("\n")]
    forms = FORMS
    return [forms.get(code) or form_of(code) for code in row["types"]]


def _event_ids(row: asyncpg.Record) -> list[str]:
    texts = row["texts"]
    if texts is not None:
        return list(texts)
    packed: bytes = row["uuids"]
    return [unpack_event_id(packed[i : i + 16]) for i in range(0, len(packed), 16)]


def recorded_at(value: dt.datetime) -> str:
    """A `timestamptz` in the log's text form (the same as SQLite's: ISO 8601, UTC, `Z`)."""
    text = value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z")


def recorded_events(
    rows: Iterable[asyncpg.Record], after: int, limit: int, *, by_version: bool
) -> list[RecordedEvent]:
    """A page's events, decoded."""
    found: list[RecordedEvent] = []
    for row in rows:
        n = len(row["types"])
        first_version, first_position = row["last_version"] - n + 1, row["last_position"] - n + 1
        forms, ids, data = _forms(row), _event_ids(row), row["data"].split("\n")
        at = recorded_at(row["recorded_at"])
        for i in _cut(row, after, limit, by_version):
            kind, schema = forms[i]
            found.append(RecordedEvent(row["job_id"], first_version + i, first_position + i,
                                       ids[i], at, decode_stored(kind, schema, data[i])))
    return found


def replay_rows(
    rows: Iterable[asyncpg.Record], after: int, limit: int, *, by_version: bool,
    upto: int | None = None,
) -> BatchedRows:
    """A `REPLAY_*_PAGE`'s events after `after` (a position, or a version with `by_version`),
    at most `limit`, up to position `upto` when given: as batches (`logfold.Batch`), the fold's
    fast path, with no object built per event."""
    found: list[Batch] = []
    bound = after + limit
    for row in rows:
        types: bytes = row["types"]
        n = len(types)
        first_version, first_position = row["last_version"] - n + 1, row["last_position"] - n + 1
        first = first_version if by_version else first_position
        start, stop = max(0, after + 1 - first), min(n, bound + 1 - first)
        if stop <= start:
            if found:
                break  # the batch past the range, which holds some events of it
            stop = min(n, start + limit)  # the range holds none: this batch's first events
        if upto is not None:
            stop = min(stop, upto - first_position + 1)
        if stop <= start:
            break
        data: list[str] = row["data"].split("\n")
        forms: bytes | list[tuple[str, int]] = types if row["odd_types"] is None else _forms(row)
        if start or stop < n:
            forms, data = forms[start:stop], data[start:stop]
        found.append((row["job_id"], first_version + start, first_position + start, forms, data))
    return BatchedRows(found)


def heads(rows: Iterable[asyncpg.Record], after: int, limit: int) -> list[tuple[str, int, int]]:
    """Per job of a `LOG_HEADS` page: its newest version and position on the page, oldest
    change first."""
    newest: dict[str, tuple[int, int]] = {}
    for row in rows:
        cut = _cut(row, after, limit, by_version=False)
        back = len(row["types"]) - cut.stop  # events of the batch past the page's end
        job_id = row["job_id"]
        newest.pop(job_id, None)  # re-inserted: the dict's order is the order of newest change
        newest[job_id] = (row["last_version"] - back, row["last_position"] - back)
    return [(job_id, version, position) for job_id, (version, position) in newest.items()]


def batch(
    job_id: str, first_version: int, items: Sequence[NewEvent], data: dict[str, str], upto: int
) -> tuple[dict[str, Any], int]:
    """One request's new events as a row of the append statement's `$3` document, and how the
    row holds their ids (`sql.PACKED_IDS`, `TEXT_IDS` or `ROUTED_IDS`)."""
    codes = CODES
    packed = [pack_event_id(item.event_id) for item in items]
    uuids = b"".join(packed) if all(p.__class__ is bytes for p in packed) else None  # type: ignore[arg-type]
    if uuids is not None:
        form = PACKED_IDS
    elif any(p.__class__ is bytes for p in packed):
        form = ROUTED_IDS
    else:
        form = TEXT_IDS
    row = {
        "job_id": job_id,
        "last_version": first_version + len(items) - 1,
        "upto": upto,
        "types": bytes([codes[type(item.event)] for item in items]).hex(),
        "uuids": None if uuids is None else uuids.hex(),
        "texts": None if uuids is not None else [item.event_id for item in items],
        "data": "\n".join([data[item.event_id] for item in items]),
    }
    return row, form


# The migration's data step ------------------------------------------------------------------

_READ_OLD = (
    "SELECT position, job_id, version, event_id, type, schema_version, data::text, recorded_at "
    "FROM events WHERE position > $1 ORDER BY position LIMIT $2"
)
_LOG_COLUMNS = ("job_key", "last_version", "last_position", "recorded_at", "types", "uuids",
                "texts", "odd_types", "data")


async def copy_batch(conn: Any, last: bool = False, batch: int = COPY_BATCH) -> int:
    """Inside a transaction: copy the next `batch` events of `events` into the lean tables; how
    many were copied. `last`: first lock `events` against writers (the final transaction)."""
    if last:
        await conn.execute("LOCK TABLE events IN EXCLUSIVE MODE")
    done = await conn.fetchval("SELECT coalesce(max(last_position), 0) FROM log")
    rows = await conn.fetch(_READ_OLD, done, batch)
    if not rows:
        return 0
    keys = await _job_keys(conn, [row["job_id"] for row in rows])
    batches, uuid_ids, text_ids = _group(rows, keys)
    await conn.copy_records_to_table("log", records=batches, columns=_LOG_COLUMNS)
    if uuid_ids:
        await conn.copy_records_to_table("log_ids", records=uuid_ids)
    if text_ids:
        await conn.copy_records_to_table("log_text_ids", records=text_ids)
    log.info("lean log: copied events up to position %d", rows[-1]["position"])
    return len(rows)


async def _job_keys(conn: Any, job_ids: Sequence[str]) -> dict[str, int]:
    distinct = list(dict.fromkeys(job_ids))
    # Only the new ones, in order of appearance: a conflict would still draw a key, and the keys
    # would then depend on where batches happened to end.
    await conn.execute(
        "INSERT INTO log_jobs (job_id) SELECT j.id "
        "FROM unnest($1::text[]) WITH ORDINALITY AS j(id, n) "
        "WHERE NOT EXISTS (SELECT 1 FROM log_jobs WHERE job_id = j.id) ORDER BY j.n",
        distinct,
    )
    found = await conn.fetch(
        "SELECT job_id, job_key FROM log_jobs WHERE job_id = ANY($1::text[])", distinct
    )
    return {row[0]: row[1] for row in found}


def _same_batch(prev: asyncpg.Record, row: asyncpg.Record, size: int) -> bool:
    return (size < MAX_ROW_EVENTS and row["job_id"] == prev["job_id"]
            and row["position"] == prev["position"] + 1 and row["version"] == prev["version"] + 1
            and row["recorded_at"] == prev["recorded_at"])


def _group(
    rows: Sequence[asyncpg.Record], keys: dict[str, int]
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Old rows as lean batches (consecutive events of one job and commit), and their ids."""
    batches: list[tuple[Any, ...]] = []
    uuid_ids: list[tuple[Any, ...]] = []
    text_ids: list[tuple[Any, ...]] = []
    start = 0
    for end in range(1, len(rows) + 1):
        if end < len(rows) and _same_batch(rows[end - 1], rows[end], end - start):
            continue
        part = rows[start:end]
        batches.append(_lean(part, keys))
        for row in part:
            packed = pack_event_id(row["event_id"])
            if packed.__class__ is bytes:
                uuid_ids.append((row["event_id"], row["position"]))
            else:
                text_ids.append((row["event_id"], row["position"]))
        start = end
    return batches, uuid_ids, text_ids


def _one_line(text: str) -> str:
    # jsonb's text form never holds a raw newline; should one come, JSON lets it be escaped.
    return text if "\n" not in text else orjson.dumps(orjson.loads(text)).decode()


def _lean(part: Sequence[asyncpg.Record], keys: dict[str, int]) -> tuple[Any, ...]:
    forms = [form_code(row["type"], row["schema_version"]) for row in part]
    plain = all(form.__class__ is int and 1 <= form <= 255 for form in forms)
    packed = [pack_event_id(row["event_id"]) for row in part]
    uuids = all(p.__class__ is bytes for p in packed)
    last = part[-1]
    return (
        keys[last["job_id"]], last["version"], last["position"], last["recorded_at"],
        bytes(forms) if plain else bytes(len(part)),  # type: ignore[arg-type]
        b"".join(packed) if uuids else None,  # type: ignore[arg-type]
        None if uuids else [row["event_id"] for row in part],
        None if plain else "\n".join(f"{row['type']}/{row['schema_version']}" for row in part),
        "\n".join(_one_line(positional_data(row["type"], row["schema_version"], row["data"]))
                  for row in part),
    )
