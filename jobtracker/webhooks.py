"""`jobtracker.webhooks.verify`: the receiver's check of a delivery (see `sdk/webhooks.py`)."""

from __future__ import annotations

from jobtracker.sdk.webhooks import WebhookVerificationError, verify

__all__ = ["WebhookVerificationError", "verify"]
