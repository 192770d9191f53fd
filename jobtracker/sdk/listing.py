"""`tracker.list_jobs(...)`: the listing's query parameters from Python values (internal)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from jobtracker.domain.errors import InvalidInput
from jobtracker.domain.listing import DEFAULT_LIMIT

Params = dict[str, list[str]]


def _moment(name: str, value: dt.datetime | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if value.tzinfo is None:
        raise InvalidInput(f"{name}: give an aware datetime (a naive one names no moment)")
    return [value.isoformat()]


def listing_params(
    status: str | Iterable[str] | None,
    labels: Mapping[str, str] | None,
    created_after: dt.datetime | str | None,
    created_before: dt.datetime | str | None,
    page_size: int = DEFAULT_LIMIT,
) -> Params:
    """The query parameters of `GET /api/v1/jobs` for these filters (the server checks them)."""
    statuses = [status] if isinstance(status, str) else list(status or ())
    params: Params = {
        "status": statuses,
        "label": [f"{key}:{value}" for key, value in (labels or {}).items()],
        "created_after": _moment("created_after", created_after),
        "created_before": _moment("created_before", created_before),
        "limit": [str(page_size)],
    }
    return {name: values for name, values in params.items() if values}


def next_page(params: Params, token: str) -> Params:
    """The same query, from the page after the one `token` ended."""
    return {**params, "page_token": [token]}
