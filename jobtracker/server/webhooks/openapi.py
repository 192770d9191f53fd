"""The webhook part of the OpenAPI document: the routes, their schemas, and the delivery itself
(OpenAPI 3.1's top-level `webhooks`)."""

from __future__ import annotations

from typing import Any

from jobtracker.domain.events import LABEL_KEY_PATTERN, MAX_INT, MAX_LABEL_VALUE, MAX_LABELS
from jobtracker.domain.paging import MAX_LIMIT
from jobtracker.domain.webhooks import EVENT_TYPES, MAX_SUBSCRIPTIONS, MAX_URL


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref(schema)}}}


MOMENT = {"type": "string", "format": "date-time"}
EVENT_TYPE = {"enum": list(EVENT_TYPES)}
LABELS = {
    "type": "object", "maxProperties": MAX_LABELS,
    "propertyNames": {"pattern": f"^{LABEL_KEY_PATTERN.pattern}$"},
    "additionalProperties": {"type": "string", "minLength": 1, "maxLength": MAX_LABEL_VALUE},
}
WEBHOOK_ID = {"name": "webhook_id", "in": "path", "required": True, "schema": {"type": "string"}}


def webhook_schemas() -> dict[str, Any]:
    """The schemas the webhook routes and deliveries use."""
    hook = {
        "webhook_id": {"type": "string"},
        "url": {"type": "string", "maxLength": MAX_URL},
        "events": {"type": "array", "items": EVENT_TYPE, "minItems": 1},
        "labels": LABELS,
        "created_at": MOMENT,
        "disabled_at": {**MOMENT, "type": ["string", "null"],
                        "description": "When a 410 answer disabled it; null while active"},
    }
    attempt = _obj({
        "message_id": {"type": "string", "description": "The delivery's `webhook-id`"},
        "type": EVENT_TYPE,
        "job_id": {"type": "string"},
        "version": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
        "attempted_at": MOMENT,
        "status": {"type": ["integer", "null"], "description": "The receiver's HTTP status; "
                   "null when there was no answer (see error)"},
        "error": {"type": ["string", "null"]},
        "duration_ms": {"type": "number", "minimum": 0},
        "next_attempt_at": {**MOMENT, "type": ["string", "null"],
                            "description": "When it is tried again; null once delivered or "
                                           "given up"},
    })
    return {
        "CreateWebhook": _obj({"url": hook["url"], "events": hook["events"],
                               "labels": {**LABELS, "type": ["object", "null"]}},
                              ["url", "events"]),
        "Webhook": _obj(hook),
        "WebhookCreated": _obj({**hook, "secret": {
            "type": "string", "pattern": "^whsec_[A-Za-z0-9+/=]+$",
            "description": "The signing secret, shown only in this answer"}}),
        "WebhookList": _obj({"webhooks": {"type": "array", "items": _ref("Webhook")}}),
        "DeliveryAttempt": attempt,
        "DeliveryPage": _obj({"deliveries": {"type": "array", "items": _ref("DeliveryAttempt")},
                              "next_page_token": {"type": ["string", "null"]}}),
        "WebhookEvent": _obj({"type": EVENT_TYPE, "timestamp": MOMENT, "data": _ref("Job")}),
    }


def webhook_paths(errors: dict[str, Any], error: Any) -> dict[str, Any]:
    """The `/api/v1/webhooks` routes; `errors` are the common answers, `error(text)` one more."""
    common = {"400": error("A query parameter given twice, or an unreadable body"),
              "401": errors["401"],
              "422": error("An unknown query parameter or a bad field, named"),
              "503": errors["503"]}
    not_found = error("`Webhook not found`: no such webhook, or another key's")
    return {
        "/api/v1/webhooks": {
            "post": {
                "summary": "Be told when the calling key's jobs change: a signed POST per event",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("CreateWebhook")}}},
                "responses": {
                    "201": _json("Created; the secret is in this answer only", "WebhookCreated"),
                    **common,
                    "422": error("A bad field, named: a URL that is not https:// (or http:// "
                                 "where allowed) or that resolves to a loopback, private, "
                                 "link-local or multicast address, an unknown event type, bad "
                                 f"labels, or more than {MAX_SUBSCRIPTIONS} webhooks"),
                },
            },
            "get": {
                "summary": "The calling key's webhooks, oldest first (no secrets)",
                "responses": {"200": _json("The list", "WebhookList"), **common},
            },
        },
        "/api/v1/webhooks/{webhook_id}": {
            "get": {
                "summary": "One of the calling key's webhooks (no secret)",
                "parameters": [WEBHOOK_ID],
                "responses": {"200": _json("The webhook", "Webhook"), "404": not_found,
                              **common},
            },
            "delete": {
                "summary": "Delete a webhook; nothing more is sent for it",
                "parameters": [WEBHOOK_ID],
                "responses": {"204": {"description": "Deleted"}, "404": not_found, **common},
            },
        },
        "/api/v1/webhooks/{webhook_id}/deliveries": {
            "get": {
                "summary": "Every delivery attempt of a webhook, newest first, a page at a time",
                "parameters": [
                    WEBHOOK_ID,
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
                     "description": f"Attempts per page (at most {MAX_LIMIT} are served)"},
                    {"name": "page_token", "in": "query", "required": False,
                     "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _json("A page; pass next_page_token back for the next",
                                 "DeliveryPage"),
                    "404": not_found,
                    **common,
                },
            },
        },
    }


def delivery_webhooks() -> dict[str, Any]:
    """OpenAPI 3.1 `webhooks`: what a receiver gets."""
    signed = {
        "webhook-id": "Unique per event and subscription; the same on every retry",
        "webhook-timestamp": "Seconds since the epoch when this try was signed",
        "webhook-signature": "`v1,<base64 HMAC-SHA256>` of `id.timestamp.body` (Standard "
                             "Webhooks), keyed with the secret",
    }
    return {
        "jobEvent": {
            "post": {
                "summary": "A job of yours changed: at least once, in log order per job",
                "parameters": [{"name": name, "in": "header", "required": True,
                                "schema": {"type": "string"}, "description": text}
                               for name, text in signed.items()],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("WebhookEvent")}}},
                "responses": {
                    "200": {"description": "Any 2xx: delivered"},
                    "410": {"description": "Gone: the webhook is disabled"},
                },
            }
        }
    }
