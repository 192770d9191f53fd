"""A listing page (`GET /api/v1/jobs`) from any store: what the server answers and what the SDK's
store transports return, built the same way.

The store is always asked for `key_id`'s jobs: nothing in `params` can widen that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jobtracker.domain import listing
from jobtracker.domain.errors import InvalidInput
from jobtracker.store.base import JobListing, Store

Params = Mapping[str, Sequence[str]]


def page_body(
    key_id: str, wanted: listing.ListRequest, found: Sequence[JobListing]
) -> dict[str, Any]:
    """The page's body from up to `wanted.limit + 1` jobs (one more says another page exists)."""
    page = found[: wanted.limit]
    token = None
    if len(found) > wanted.limit:
        token = listing.page_token(key_id, wanted.query, page[-1].cursor)
    items = [listing.listing_item(j.state, j.labels, j.created_at, j.updated_at) for j in page]
    return {"jobs": items, "next_page_token": token}


def check_parameters(params: Params) -> None:
    """Refuse a parameter the listing does not take (a typo must not widen the answer)."""
    unknown = sorted(set(params) - set(listing.PARAMETERS))
    if unknown:
        raise InvalidInput(f"{unknown[0]}: unknown query parameter")


async def list_page(store: Store, key_id: str, params: Params) -> dict[str, Any]:
    """One page of `key_id`'s jobs as the query parameters `params` ask."""
    check_parameters(params)
    wanted = listing.parse_list_request(params, key_id)
    found = await store.list_jobs(key_id, wanted.query, wanted.after, wanted.limit + 1)
    return page_body(key_id, wanted, found)
