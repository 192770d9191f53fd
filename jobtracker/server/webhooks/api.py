"""`/api/v1/webhooks`: a key's subscriptions, made, listed, read, deleted, and their attempts.

A key sees only its own subscriptions: another key's is 404, exactly like one that never
existed. The signing secret is shown once, in the creation answer, and never logged.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from typing import Any

from aiohttp import web

from jobtracker.domain.errors import InvalidInput, JobNotFound
from jobtracker.domain.paging import ascii_int, page_limit
from jobtracker.domain.webhooks import parse_subscription
from jobtracker.server.common import (
    SETTINGS,
    STORE,
    json_body,
    json_response,
    only_query,
    request_key,
)
from jobtracker.server.webhooks.guard import check_destination, check_url
from jobtracker.store.base import ApiKey
from jobtracker.store.webhooks import Attempt, Webhook, iso_time

_WEBHOOK_ID = re.compile(r"wh_[A-Za-z0-9_-]{1,64}")
#: Random bytes in a signing secret (the standard asks for 24 to 64).
SECRET_BYTES = 32


def webhook_body(hook: Webhook) -> dict[str, Any]:
    """A subscription as the API shows it: never its secret."""
    return {
        "webhook_id": hook.webhook_id,
        "url": hook.url,
        "events": list(hook.events),
        "labels": hook.labels,
        "created_at": hook.created_at,
        "disabled_at": hook.disabled_at,
    }


def attempt_body(attempt: Attempt) -> dict[str, Any]:
    """One try of a delivery as the API shows it."""
    return {
        "message_id": attempt.msg_id,
        "type": attempt.type,
        "job_id": attempt.job_id,
        "version": attempt.version,
        "attempted_at": iso_time(attempt.attempted_at),
        "status": attempt.status,
        "error": attempt.error,
        "duration_ms": attempt.duration_ms,
        "next_attempt_at": None if attempt.next_attempt is None else iso_time(attempt.next_attempt),
    }


async def create_webhook(request: web.Request) -> web.Response:
    """`POST /api/v1/webhooks`: 201 with the subscription and its secret (shown only here)."""
    key = await request_key(request)
    only_query(request)
    settings = request.app[SETTINGS]
    wanted = parse_subscription(await json_body(request, empty=None))
    check_url(wanted.url, allow_http=settings.webhook_allow_http)
    await check_destination(wanted.url, allow_private=settings.webhook_allow_private)
    store = request.app[STORE]
    now = iso_time(time.time())
    hook = Webhook(
        webhook_id=f"wh_{secrets.token_urlsafe(16)}",
        key_id=key.key_id,
        url=wanted.url,
        events=wanted.events,
        labels=wanted.labels,
        secret="whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode(),
        created_at=now,
        # Told of what happens from now on: the log so far is history.
        cursor=await store.last_position(),
    )
    await store.webhooks.add(hook)
    return json_response({**webhook_body(hook), "secret": hook.secret}, 201)


async def list_webhooks(request: web.Request) -> web.Response:
    """`GET /api/v1/webhooks`: the calling key's subscriptions, oldest first."""
    key = await request_key(request)
    only_query(request)
    hooks = await request.app[STORE].webhooks.for_key(key.key_id)
    return json_response({"webhooks": [webhook_body(hook) for hook in hooks]})


async def _own_webhook(request: web.Request, key: ApiKey) -> Webhook:
    webhook_id = request.match_info["webhook_id"]
    hook = None
    if _WEBHOOK_ID.fullmatch(webhook_id):
        hook = await request.app[STORE].webhooks.get(webhook_id)
    if hook is None or hook.key_id != key.key_id:
        raise JobNotFound("Webhook not found")
    return hook


async def get_webhook(request: web.Request) -> web.Response:
    """`GET /api/v1/webhooks/{webhook_id}`: one of the key's subscriptions."""
    key = await request_key(request)
    only_query(request)
    return json_response(webhook_body(await _own_webhook(request, key)))


async def delete_webhook(request: web.Request) -> web.Response:
    """`DELETE /api/v1/webhooks/{webhook_id}`: 204; nothing more is sent for it."""
    key = await request_key(request)
    only_query(request)
    hook = await _own_webhook(request, key)
    await request.app[STORE].webhooks.delete(hook.webhook_id)
    return web.Response(status=204)


async def webhook_deliveries(request: web.Request) -> web.Response:
    """`GET /api/v1/webhooks/{webhook_id}/deliveries`: every try, newest first, paged."""
    key = await request_key(request)
    only_query(request, "limit", "page_token")
    hook = await _own_webhook(request, key)
    limit = page_limit(request.query)
    before = _page_start(request.query.get("page_token"))
    found = await request.app[STORE].webhooks.attempts(hook.webhook_id, before, limit + 1)
    shown = found[:limit]
    token = _token(shown[-1].attempt_id) if len(found) > limit else None
    return json_response({"deliveries": [attempt_body(a) for a in shown],
                          "next_page_token": token})


def _token(attempt_id: int) -> str:
    return base64.urlsafe_b64encode(f"a:{attempt_id}".encode()).decode().rstrip("=")


def _page_start(token: str | None) -> int | None:
    if token is None:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    value = ascii_int(text[2:]) if text.startswith("a:") else None
    if value is None or value < 1:
        raise InvalidInput("page_token: not a token this API gave out")
    return value
