"""Finding a key's jobs (CONTRACT.md, "Inventory"): the query, its page tokens, each item's body.

Pages are keyset pages: newest first by (creation time, job id), and a token holds the last item
it showed. A job created while someone pages lands before their first page, so it never shifts
a later one, and every job that existed when paging began is shown exactly once.

A token is bound to the key and the query by a digest over both and the cursor: a token from
another key or another query, or one edited by hand, is refused (400) instead of quietly paging
something else. The digest is not secret and needs not be: whatever the token says, the store
only ever lists the calling key's own jobs.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import orjson

from jobtracker.domain.errors import InvalidInput, MalformedRequest
from jobtracker.domain.events import LABEL_KEY_PATTERN, MAX_LABEL_VALUE, LabelPairs
from jobtracker.domain.projection import progress_body
from jobtracker.domain.state import JobState, Status

#: Items per page: allowed range and default.
LIMIT_RANGE = (1, 200)
DEFAULT_LIMIT = 50
#: The query parameters `GET /api/v1/jobs` takes; `status` and `label` may repeat.
PARAMETERS = ("status", "label", "created_after", "created_before", "limit", "page_token")
REPEATABLE = frozenset({"status", "label"})
_LEAP_SECOND = re.compile(r"(T\d\d:\d\d:)60(?:\.\d+)?")


@attrs.frozen
class JobQuery:
    """Which of a key's jobs to list; times are in the log's own form (`log_time`)."""

    statuses: tuple[Status, ...] = ()
    labels: LabelPairs = ()
    created_after: str | None = None
    created_before: str | None = None


@attrs.frozen
class Cursor:
    """The last job a page showed: the next page starts strictly below it."""

    created_at: str
    job_id: str


@attrs.frozen
class ListRequest:
    """A parsed listing request."""

    query: JobQuery
    limit: int = DEFAULT_LIMIT
    after: Cursor | None = None


def log_time(moment: dt.datetime) -> str:
    """A moment as the log writes times: ISO 8601 UTC with microseconds, e.g. `...00.120000Z`.

    Text of this one form sorts like the moments it names.
    """
    try:
        moment = moment.astimezone(dt.UTC)
    except OverflowError:  # a zone offset past year 1 or 9999: the edge of time is near enough
        moment = (dt.datetime.max if moment.year > 1 else dt.datetime.min).replace(tzinfo=dt.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def api_time(logged: str) -> str:
    """A log time as the API shows times: RFC 3339 UTC with milliseconds."""
    return logged[:23] + "Z" if len(logged) > 23 else logged


def parse_time(field: str, text: str) -> dt.datetime:
    """An RFC 3339 time with a zone (`Z` or an offset), or `InvalidInput` naming `field`."""
    # RFC 3339 allows a lower-case t and z, and a leap second, which Python's parser does not.
    normal = _LEAP_SECOND.sub(r"\g<1>59.999999", text.upper())
    try:
        moment = dt.datetime.fromisoformat(normal)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None or "T" not in text.upper():
        raise InvalidInput(
            f"{field}: must be an RFC 3339 time with a zone, like 2026-12-04T10:00:00Z"
        )
    return moment


def parse_list_request(params: Mapping[str, Sequence[str]], key_id: str) -> ListRequest:
    """Read the query parameters of `GET /api/v1/jobs` (each given as the list of its values).

    `InvalidInput` names the parameter at fault. Unknown parameters are refused by the caller.
    """
    for name, values in params.items():
        if name not in REPEATABLE and len(values) > 1:
            raise InvalidInput(f"{name}: given more than once; give it once")
    query = JobQuery(
        statuses=_statuses(params.get("status", ())),
        labels=_label_filters(params.get("label", ())),
        created_after=_optional_time(params, "created_after"),
        created_before=_optional_time(params, "created_before"),
    )
    token = _single(params, "page_token")
    after = None if token is None else read_token(token, key_id, query)
    return ListRequest(query, _limit(_single(params, "limit")), after)


def _single(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _statuses(values: Sequence[str]) -> tuple[Status, ...]:
    chosen = set()
    for value in values:
        try:
            chosen.add(Status(value))
        except ValueError:
            allowed = ", ".join(s.value for s in Status)
            raise InvalidInput(
                f"status: unknown status {value[:40]!r}; expected one of {allowed}"
            ) from None
    return tuple(sorted(chosen))


def _label_filters(values: Sequence[str]) -> LabelPairs:
    pairs: set[tuple[str, str]] = set()
    for value in values:
        key, colon, wanted = value.partition(":")
        if not colon or not LABEL_KEY_PATTERN.fullmatch(key):
            raise InvalidInput(
                "label: must be key:value, the key 1-63 characters of a-z 0-9 _ . -"
            )
        if not 0 < len(wanted) <= MAX_LABEL_VALUE or "\x00" in wanted:
            raise InvalidInput(f"label: the value must be 1-{MAX_LABEL_VALUE} characters")
        pairs.add((key, wanted))  # one key with two values: no job has both, nothing matches
    return tuple(sorted(pairs))


def _optional_time(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    text = _single(params, name)
    return None if text is None else log_time(parse_time(name, text))


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    low, high = LIMIT_RANGE
    if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
        raise InvalidInput(f"limit: must be a whole number from {low} to {high}")
    return int(text)


def _digest(key_id: str, query: JobQuery, cursor: Cursor) -> str:
    bound = orjson.dumps([
        key_id, [s.value for s in query.statuses], query.labels, query.created_after,
        query.created_before, cursor.created_at, cursor.job_id,
    ])
    return hashlib.sha256(bound).hexdigest()[:32]


def page_token(key_id: str, query: JobQuery, cursor: Cursor) -> str:
    """The opaque token of the page after `cursor`, for this key and query only."""
    raw = orjson.dumps([cursor.created_at, cursor.job_id, _digest(key_id, query, cursor)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str, key_id: str, query: JobQuery) -> Cursor:
    """The cursor a token holds; `InvalidInput` unless this key made it for this query."""
    refused = MalformedRequest(
        "page_token: not a token of this query for this key; start again without it"
    )
    try:
        created_at, job_id, digest = orjson.loads(
            base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        )
    except (ValueError, TypeError, binascii.Error):
        raise refused from None
    if not (isinstance(created_at, str) and isinstance(job_id, str)):
        raise refused
    cursor = Cursor(created_at, job_id)
    if digest != _digest(key_id, query, cursor):
        raise refused
    return cursor


def listing_item(
    state: JobState, labels: LabelPairs | None, created_at: str, updated_at: str
) -> dict[str, Any]:
    """One job as a listing shows it. A finished job's last event is its ending, so it finished
    when it was last updated."""
    progress = None
    if state.progress is not None or state.rows_processed:
        shown = progress_body(state)
        progress = {"current": shown["current"], "total": shown["total"]}
    return {
        "job_id": state.job_id,
        "status": state.status.value,
        "labels": dict(labels or ()),
        "created_at": api_time(created_at),
        "updated_at": api_time(updated_at),
        "finished_at": api_time(updated_at) if state.status.is_terminal else None,
        "progress": progress,
        "counts": {"successful": state.successful, "failed": state.failed},
    }
