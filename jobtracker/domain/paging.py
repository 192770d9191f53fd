"""The paged reads of a job: its history (`/events`) and its row errors (`/errors`).

A page is `{"job_id": …, "<items>": [...], "next_<cursor>": N | null}`: pass N back as the cursor
to get the next page; `null` means this page reached the end. Pages are read by key range
(version, row), so each costs the same however long the job is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from jobtracker.domain.codec import event_fields
from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.events import MAX_INT, RecordedEvent
from jobtracker.domain.state import RowError

#: Items per page when the client does not say.
DEFAULT_LIMIT = 100
#: Most items per page; a larger `limit` is served this many.
MAX_LIMIT = 1000
_INTEGER = re.compile(r"-?[0-9]{1,16}")


def ascii_int(raw: str) -> int | None:
    """`raw` as an integer when it is an optional minus and 1-16 ASCII digits, else None.

    `str.isdigit` is true for '²' (which `int` then refuses) and for Arabic-Indic digits (which
    `int` reads), and `int` refuses more than 4,300 digits: a client's text never meets them.
    """
    return int(raw) if _INTEGER.fullmatch(raw) else None


def int_param(query: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    """A query parameter or header that must be an integer >= `minimum`; `InvalidInput` names it."""
    raw = query.get(name)
    if raw is None:
        return default
    value = ascii_int(raw)
    if value is None:
        raise InvalidInput(f"{name}: must be an integer, got {raw[:40]!r}")
    if not minimum <= value <= MAX_INT:
        raise InvalidInput(f"{name}: must be between {minimum} and {MAX_INT}, got {value}")
    return value


def page_limit(query: Mapping[str, str]) -> int:
    """The `limit` asked for, at least 1, capped at `MAX_LIMIT`."""
    return min(int_param(query, "limit", DEFAULT_LIMIT, 1), MAX_LIMIT)


def event_item(recorded: RecordedEvent) -> dict[str, Any]:
    """One history entry: where it stands in the log, its type and its own fields."""
    return {
        "version": recorded.version,
        "position": recorded.position,
        "type": recorded.event.TYPE,
        "event_id": recorded.event_id,
        "recorded_at": recorded.recorded_at,
        **event_fields(recorded.event),
    }


def events_page(job_id: str, found: Sequence[RecordedEvent], limit: int) -> dict[str, Any]:
    """A page of history; `found` may hold one event more than `limit` (then there is more)."""
    shown = found[:limit]
    more = len(found) > limit
    return {
        "job_id": job_id,
        "events": [event_item(e) for e in shown],
        "next_after_version": shown[-1].version if more else None,
    }


def errors_page(
    job_id: str, found: Sequence[RowError], limit: int, errors_total: int
) -> dict[str, Any]:
    """A page of row errors in row order; `found` may hold one more than `limit`."""
    shown = found[:limit]
    more = len(found) > limit
    return {
        "job_id": job_id,
        "errors": [{"row": e.row, "email": e.email, "error": e.error} for e in shown],
        "errors_total": errors_total,
        "next_after_row": shown[-1].row if more else None,
    }
