"""For receivers: check that a webhook delivery came from your jobtracker server, unaltered.

A thin wrapper over the Standard Webhooks reference library (`standardwebhooks`): the signature
is `v1,<base64 HMAC-SHA256>` of `webhook-id.webhook-timestamp.body`, keyed with the secret the
server showed once when the webhook was made, and the timestamp must be within five minutes.

    from jobtracker.webhooks import verify
    event = verify(request.headers, await request.read(), secret)  # raises if forged
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import standardwebhooks
from standardwebhooks.webhooks import WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify"]


def verify(headers: Mapping[str, str], body: bytes | str, secret: str) -> Any:
    """The delivery's JSON (`{"type", "timestamp", "data"}`) when its signature holds.

    `body` must be the raw request body, exactly as received (not re-encoded JSON). Raises
    `WebhookVerificationError` for a missing or wrong signature or a timestamp more than five
    minutes off. Deliveries come at least once: use `headers["webhook-id"]` to drop repeats.
    """
    return standardwebhooks.Webhook(secret).verify(body, dict(headers))
