"""The OpenAPI 3.1 document of the whole HTTP API, served at /api/v1/openapi.json.

Built from the same constants the code enforces (statuses, event fields, limits), and kept true by
a test that validates real responses against it.
"""

from __future__ import annotations

from typing import Any

import attrs

from jobtracker.domain import listing
from jobtracker.domain.events import (
    EVENT_CLASSES,
    FAILURE_REASONS,
    HEARTBEAT_TIMEOUT_RANGE,
    LABEL_KEY_PATTERN,
    MAX_EMAIL,
    MAX_EVENT_ID,
    MAX_INT,
    MAX_LABEL,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    MAX_TEXT,
    TIMEOUT_RANGE,
    WORKER_TYPES,
)
from jobtracker.domain.state import Status
from jobtracker.server.settings import Settings

JOB_ID = {"type": "string", "pattern": "^(?!\\.\\.?$)[A-Za-z0-9._:-]{1,128}$"}
NO_NUL = "^[^\\u0000]*$"
LABEL_FILTER = f"^{LABEL_KEY_PATTERN.pattern}:[^\\u0000]{{1,{MAX_LABEL_VALUE}}}$"
COUNT = {"type": "integer", "minimum": 0, "maximum": MAX_INT}
_FIELD_SCHEMAS: dict[str, dict[str, Any]] = {
    "row": COUNT,
    "current": COUNT,
    "total": COUNT,
    "email": {"type": "string", "minLength": 1, "maxLength": MAX_EMAIL, "pattern": NO_NUL},
    "error": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT, "pattern": NO_NUL},
    "status": {"type": ["string", "null"], "maxLength": MAX_TEXT, "pattern": NO_NUL},
    "internal": {"type": "boolean"},
    "reason": {"enum": [*sorted(FAILURE_REASONS), None],
               "description": "Why the job failed when its worker did not say so itself"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _event_schema(kind: str) -> dict[str, Any]:
    fields = attrs.fields(EVENT_CLASSES[kind])
    properties: dict[str, Any] = {
        "type": {"const": kind},
        "event_id": {"type": "string", "minLength": 1, "maxLength": MAX_EVENT_ID,
                     "pattern": NO_NUL},
    }
    properties |= {f.name: _FIELD_SCHEMAS[f.name] for f in fields}
    required = ["type", *(f.name for f in fields if f.default is attrs.NOTHING)]
    return _obj(properties, required)


#: Only in the body of a running job whose owner asked it to stop (never in a seed body).
CANCEL_ASKED = {"cancel_requested": {"const": True}}


def _job_schemas() -> dict[str, Any]:
    row_error = _obj({"row": COUNT, "email": {"type": "string"}, "error": {"type": "string"}})
    result = _obj(
        {
            "total": COUNT,
            "successful": COUNT,
            "failed": COUNT,
            "errors": {"type": "array", "items": row_error},
            "emails_sent": COUNT,
            "emails_failed": COUNT,
            "internal_count": COUNT,
            "external_count": COUNT,
            "errors_total": COUNT,
            "errors_truncated": {"const": True},
        },
        ["total", "successful", "failed", "errors", "emails_sent", "emails_failed",
         "internal_count", "external_count"],
    )
    progress = _obj({"current": COUNT, "total": COUNT, "status": {"type": "string"}})
    waiting = {"enum": [Status.PENDING.value, Status.STARTED.value]}
    return {
        "RowError": row_error,
        "JobWaiting": _obj({"job_id": JOB_ID, "status": waiting, **CANCEL_ASKED},
                           ["job_id", "status"]),
        "JobProgress": _obj({"job_id": JOB_ID, "status": {"const": "PROGRESS"},
                             "progress": progress, **CANCEL_ASKED},
                            ["job_id", "status", "progress"]),
        "JobSuccess": _obj({"job_id": JOB_ID, "status": {"const": "SUCCESS"}, "result": result}),
        "JobFailure": _obj({"job_id": JOB_ID, "status": {"const": "FAILURE"},
                            "error": {"type": "string"}}),
        "Job": {"oneOf": [_ref(n) for n in ("JobWaiting", "JobProgress", "JobSuccess",
                                            "JobFailure")]},
    }


def _page_schemas() -> dict[str, Any]:
    recorded = {
        "type": "object",
        "properties": {"version": COUNT, "position": COUNT, "type": {"type": "string"},
                       "event_id": {"type": "string"}, "recorded_at": {"type": "string"}},
        "required": ["version", "position", "type", "event_id", "recorded_at"],
    }
    next_cursor = {"type": ["integer", "null"]}
    return {
        "History": _obj({"job_id": JOB_ID, "events": {"type": "array", "items": recorded},
                         "next_after_version": next_cursor}),
        "ErrorsPage": _obj({"job_id": JOB_ID, "errors": {"type": "array",
                                                         "items": _ref("RowError")},
                            "errors_total": COUNT, "next_after_row": next_cursor}),
    }


def _job_list() -> dict[str, Any]:
    moment = {"type": "string", "format": "date-time"}
    item = _obj({
        "job_id": JOB_ID,
        "status": {"enum": [s.value for s in Status]},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "created_at": moment,
        "updated_at": moment,
        "finished_at": {**moment, "type": ["string", "null"]},
        "progress": {"oneOf": [{"type": "null"}, _obj({"current": COUNT, "total": COUNT})]},
        "counts": _obj({"successful": COUNT, "failed": COUNT}),
    })
    return _obj({"jobs": {"type": "array", "items": item},
                 "next_page_token": {"type": ["string", "null"]}})


def _seconds(bounds: tuple[int, int], description: str) -> dict[str, Any]:
    return {"type": ["integer", "null"], "minimum": bounds[0], "maximum": bounds[1],
            "description": description}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": _ref("Error")}}}


def _json(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }
    if headers:
        answer["headers"] = headers
    return answer


RETRY_AFTER = {"schema": {"type": "string", "pattern": "^[0-9]+$"},
               "description": "Seconds to wait before asking again"}
ERRORS = {
    "401": _error("No API key, or an unknown or revoked one"),
    "403": _error("The key may not touch this job: `Access denied to this job`"),
    "404": _error("`Job not found` (unknown or malformed id)"),
    "410": _error("`Job expired`: retention removed this finished job (its owner's key only; "
                  "any other key still gets 403)"),
    "503": {**_error("The store is unavailable; safe to retry"),
            "headers": {"Retry-After": RETRY_AFTER}},
}
JOB_PATH_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": JOB_ID}
FRESHNESS = {
    "ETag": {"schema": {"type": "string", "pattern": '^"[0-9]+"$'},
             "description": "The job's version, quoted; send it back as If-None-Match"},
    "Retry-After": {**RETRY_AFTER, "description": "Seconds until polling again is worth it; "
                    "on jobs still running only"},
}
LAST_EVENT_ID = {"name": "Last-Event-ID", "in": "header", "required": False,
                 "description": "The last version received; the stream resumes after it",
                 "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"}}
STREAM_DESCRIPTION = (
    "text/event-stream. A `retry:` line first, then one event per change of the job: `id:` is "
    "the job's version and `data:` its body (the same JSON as GET), the last one for the "
    "terminal state, after which the stream ends. `: heartbeat` comments keep idle "
    "connections open. The schema describes one event, as tools for OpenAPI 3.1 read it "
    "(3.2's itemSchema)."
)


LIMIT = {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INT}}


def _cursor(name: str, minimum: int) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": minimum, "maximum": MAX_INT}}


def _listing_parameters() -> list[dict[str, Any]]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema,
                "description": description}

    statuses = {"type": "array", "items": {"enum": [s.value for s in Status]}}
    labels = {"type": "array", "items": {"type": "string", "pattern": LABEL_FILTER}}
    low, high = listing.LIMIT_RANGE
    return [
        {**query("status", statuses, "Only jobs in one of these statuses (repeatable)"),
         "style": "form", "explode": True},
        {**query("label", labels, "`key:value`; only jobs with every label given (repeatable)"),
         "style": "form", "explode": True},
        query("created_after", {"type": "string", "format": "date-time"},
              "Only jobs created after this RFC 3339 time"),
        query("created_before", {"type": "string", "format": "date-time"},
              "Only jobs created before this RFC 3339 time"),
        query("limit", {"type": "integer", "minimum": low, "maximum": high,
                        "default": listing.DEFAULT_LIMIT}, "Jobs per page"),
        query("page_token", {"type": "string"},
              "next_page_token of the previous page, with the same key and query"),
    ]


def _paths() -> dict[str, Any]:
    wait = {"name": "wait", "in": "query", "required": False,
            "schema": {"type": "integer", "minimum": 0, "maximum": 60}}
    min_version = {
        "name": "min_version", "in": "query", "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT},
        "description": "The version an append was answered with: on a server that reads a "
                       "replica (serve --read-url), the answer is that version or a newer one "
                       "(read-your-writes); elsewhere every answer is current anyway",
    }
    return {
        "/api/v1/jobs": {
            "get": {
                "summary": "The calling key's own jobs, newest first, filtered, a page at a time",
                "parameters": _listing_parameters(),
                "responses": {
                    "200": _json("A page; pass next_page_token back for the next", "JobList"),
                    "400": _error("A page_token of another key or query, or not a token"),
                    "401": ERRORS["401"],
                    "422": _error("A bad query parameter, named"),
                    "503": ERRORS["503"],
                },
            },
            "post": {
                "summary": "Create a job owned by the caller's key (idempotent per owner)",
                "requestBody": {"required": False, "content": {
                    "application/json": {"schema": _ref("CreateJob")}}},
                "responses": {
                    "201": _json("Created", "JobCreated"),
                    "200": _json("The owner's existing job with this id", "JobCreated"),
                    "400": _error("Unreadable body"),
                    "401": ERRORS["401"],
                    "403": _error("A worker key naming an owner outside its binding"),
                    "409": _error("Another key owns this job id, or it was a job's that "
                                  "retention removed (ids are never used twice)"),
                    "413": _error("Body too large"),
                    "415": _error("A Content-Encoding other than gzip or deflate"),
                    "422": _error("A bad field, named"),
                    "503": ERRORS["503"],
                },
            }
        },
        "/api/v1/jobs/{job_id}": {
            "get": {
                "summary": "The job's status and result, as the seed page shows them",
                "parameters": [JOB_PATH_PARAM, wait, min_version],
                "responses": {
                    "200": _json("The job", "Job", FRESHNESS),
                    "304": {"description": "Unchanged since If-None-Match", "headers": FRESHNESS},
                    "400": _error("A query parameter given more than once"),
                    "422": _error("A bad query parameter, named"),
                    **ERRORS,
                },
            }
        },
        "/api/v1/jobs/{job_id}/events": {
            "get": {
                "summary": "The job's history, oldest first, a page at a time (owner only)",
                "parameters": [JOB_PATH_PARAM, _cursor("after_version", 0), LIMIT],
                "responses": {
                    "200": _json("A page; pass next_after_version back for the next", "History"),
                    "400": _error("A query parameter given more than once"),
                    "422": _error("A bad query parameter, named"),
                    **ERRORS,
                },
            },
            "post": {
                "summary": "Append a batch of events atomically (owner or worker-scope key)",
                "parameters": [JOB_PATH_PARAM],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "array", "items": _ref("Event"), "minItems": 1,
                               "maxItems": Settings().max_events}}}},
                "responses": {
                    "200": _json("Appended", "Appended"),
                    "400": _error("Unreadable body, or not a JSON array"),
                    "409": _error("Finished job, second outcome for a row, reused event id"),
                    "413": _error("Too large"),
                    "415": _error("A Content-Encoding other than gzip or deflate"),
                    "422": _error("A bad event, named by index and field"),
                    **ERRORS,
                },
            }
        },
        "/api/v1/jobs/{job_id}/errors": {
            "get": {
                "summary": "Every row error of the job, in row order, a page at a time",
                "parameters": [JOB_PATH_PARAM, _cursor("after_row", -1), LIMIT],
                "responses": {
                    "200": _json("A page; pass next_after_row back for the next", "ErrorsPage"),
                    "400": _error("A query parameter given more than once"),
                    "422": _error("A bad query parameter, named"),
                    **ERRORS,
                },
            }
        },
        "/api/v1/jobs/{job_id}/stream": {
            "get": {
                "summary": "Server-sent events: the job's body on every change",
                "parameters": [JOB_PATH_PARAM, LAST_EVENT_ID],
                "responses": {
                    "200": {"description": STREAM_DESCRIPTION,
                            "content": {"text/event-stream": {"schema": _ref("StreamEvent")}}},
                    "400": _error("A query parameter given more than once"),
                    "422": _error("A bad query parameter or Last-Event-ID, named"),
                    **ERRORS,
                },
            }
        },
        "/api/v1/jobs/{job_id}/heartbeat": {
            "post": {
                "summary": "The worker is alive (owner or worker key); writes no event",
                "parameters": [JOB_PATH_PARAM],
                "responses": {
                    "204": {"description": "Heard", "headers": {"X-Cancel-Requested": {
                        "schema": {"const": "true"},
                        "description": "Present when the owner asked the job to stop"}}},
                    "409": _error("The job is finished"),
                    **ERRORS,
                },
            }
        },
        "/api/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Stop the job (owner key only): a PENDING job fails at once, a running "
                           "one is asked to stop and failed after the server's grace period",
                "parameters": [JOB_PATH_PARAM],
                "responses": {
                    "202": _json("The job after the request", "Job"),
                    "409": _error("The job is finished"),
                    **ERRORS,
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {"summary": "This document", "security": [],
                    "responses": {"200": {"description": "OpenAPI 3.1",
                                          "content": {"application/json": {}}}}}
        },
    }


def _stream_event() -> dict[str, Any]:
    """One server-sent event of a job's stream, as an SSE parser hands it over."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"const": "message"},
            "id": {"type": "string", "pattern": "^[0-9]+$"},
            "retry": {"type": "integer", "minimum": 0},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": _ref("Job")},
        },
    }


REQUEST_ID = {
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"},
    "description": "The request's id: the client's own X-Request-ID when it is 1-128 of "
                   "A-Z a-z 0-9 . _ -, made by the server otherwise; it is in every log line of "
                   "the request",
}


def _with_request_ids(paths: dict[str, Any]) -> dict[str, Any]:
    """Every answer carries `X-Request-ID`."""
    for operations in paths.values():
        for operation in operations.values():
            for answer in operation["responses"].values():
                answer["headers"] = {**answer.get("headers", {}), "X-Request-ID": REQUEST_ID}
    return paths


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    from jobtracker.server.webhooks import openapi as webhooks

    events = {f"Event_{kind}": _event_schema(kind) for kind in sorted(WORKER_TYPES)}
    schemas: dict[str, Any] = {
        "Error": _obj({"detail": {"type": "string"}}),
        "CreateJob": _obj(
            {"job_id": {**JOB_ID, "type": ["string", "null"]},
             "heartbeat_timeout": _seconds(HEARTBEAT_TIMEOUT_RANGE, "A running job with no event "
                                           "and no heartbeat this long is failed as worker_lost "
                                           "(default: the server's, 600)"),
             "timeout": _seconds(TIMEOUT_RANGE, "A job not finished this long after its creation "
                                 "is failed as timed_out (default: none)"),
             "total": {**COUNT, "type": ["integer", "null"]},
             "label": {"type": ["string", "null"], "maxLength": MAX_LABEL, "pattern": NO_NUL},
             "labels": {
                 "type": ["object", "null"], "maxProperties": MAX_LABELS,
                 "propertyNames": {"pattern": f"^{LABEL_KEY_PATTERN.pattern}$"},
                 "additionalProperties": {"type": "string", "minLength": 1,
                                          "maxLength": MAX_LABEL_VALUE, "pattern": NO_NUL},
                 "description": "Labels to find the job by: GET /api/v1/jobs?label=key:value",
             },
             "owner": {
                 "type": ["string", "null"], "minLength": 1, "maxLength": MAX_EVENT_ID,
                 "pattern": NO_NUL,
                 "description": (
                     "Worker-scope keys only (422 from an owner key): the id of the active owner "
                     "key the job is for, which then reads it. A worker key bound to owners must "
                     "name one of them (403 otherwise) and may leave it out only when bound to "
                     "exactly one; an all-owners worker key may name any owner key, and owns the "
                     "job itself when it names none. An id that is no owner key, or a revoked "
                     "one, is 422."
                 ),
             }},
            [],
        ),
        "JobCreated": _obj({"job_id": JOB_ID, "status": {"type": "string"}}),
        "Appended": _obj({"appended": COUNT, "duplicates": COUNT, "version": COUNT,
                          **CANCEL_ASKED}, ["appended", "duplicates", "version"]),
        **events,
        "Event": {
            "oneOf": [_ref(name) for name in events],
            "discriminator": {
                "propertyName": "type",
                "mapping": {k: f"#/components/schemas/Event_{k}" for k in sorted(WORKER_TYPES)},
            },
        },
        **_job_schemas(),
        **_page_schemas(),
        "JobList": _job_list(),
        "StreamEvent": _stream_event(),
        **webhooks.webhook_schemas(),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobtracker", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
        "security": [{"apiKey": []}],
        "paths": _with_request_ids({**_paths(), **webhooks.webhook_paths(ERRORS, _error)}),
        "webhooks": webhooks.delivery_webhooks(),
    }
