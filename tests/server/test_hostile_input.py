"""A catalogue of bad input: each gets the right 4xx with a `detail`, and the log does not move."""

from __future__ import annotations

import asyncio
import gzip
import io
import logging
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from jobtracker.store import Store
from jobtracker.store.keys import IssuedKey

ROW = {"type": "row_succeeded", "row": 1, "email": "a@uni.edu", "internal": True}
ROW_TWICE_TYPED = (b'[{"type": "succeeded", "type": "row_succeeded", "row": 1,'
                   b' "email": "a@uni.edu", "internal": true}]')

EVENT_BODIES: list[tuple[str, bytes, int, str]] = [
    ("truncated JSON", b'[{"type": "started"', 400, "not valid JSON"),
    ("not JSON at all", b"row=1&email=x", 400, "not valid JSON"),
    ("invalid UTF-8", b'[{"type": "\xff\xfe"}]', 400, "not valid JSON"),
    ("lone surrogate", b'[{"type": "row_failed", "row": 1, "email": "\\ud800", "error": "x"}]',
     400, "not valid JSON"),
    ("an object, not an array", orjson.dumps({"type": "started"}), 400, "JSON array"),
    ("a bare string", b'"started"', 400, "JSON array"),
    ("an empty batch", b"[]", 422, "empty"),
    ("an event that is a string", b'["started"]', 422, "events[0]"),
    ("unknown type", orjson.dumps([{"type": "deleted"}]), 422, "events[0].type"),
    ("created from a worker", orjson.dumps([{"type": "created", "owner": "me"}]), 422,
     "events[0].type"),
    ("row as a string", orjson.dumps([{**ROW, "row": "1"}]), 422, "events[0].row"),
    ("row as a float", orjson.dumps([{**ROW, "row": 1.5}]), 422, "events[0].row"),
    ("internal as 1", orjson.dumps([{**ROW, "internal": 1}]), 422, "events[0].internal"),
    ("negative row", orjson.dumps([{**ROW, "row": -1}]), 422, "events[0].row"),
    ("row past 2**53", orjson.dumps([{**ROW, "row": 2**60}]), 422, "events[0].row"),
    ("current > total", orjson.dumps([{"type": "progress", "current": 9, "total": 3}]), 422,
     "events[0].current"),
    ("missing field", orjson.dumps([{"type": "row_failed", "row": 1, "email": "x"}]), 422,
     "events[0].error"),
    ("extra field", orjson.dumps([{**ROW, "rowz": 2}]), 422, "events[0].rowz"),
    ("NUL in e-mail", orjson.dumps([{**ROW, "email": "a\x00b"}]), 422, "events[0].email"),
    ("huge e-mail", orjson.dumps([{**ROW, "email": "a" * 10_000}]), 422, "events[0].email"),
    ("huge error text", orjson.dumps([{"type": "failed", "error": "x" * 100_000}]), 422,
     "events[0].error"),
    ("event_id of 10 kB", orjson.dumps([{**ROW, "event_id": "e" * 10_000}]), 422,
     "events[0].event_id"),
    ("event_id as a number", orjson.dumps([{**ROW, "event_id": 7}]), 422, "events[0].event_id"),
    ("second bad among good", orjson.dumps([ROW, {**ROW, "row": 2, "email": ""}]), 422,
     "events[1].email"),
    ("10,001 events", orjson.dumps([{"type": "started"}] * 10_001), 413, "10000"),
    ("a body over 1 MiB", orjson.dumps([{"type": "failed", "error": "x" * 2_000_000}]), 413,
     "larger than"),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000, 400, "not valid JSON"),
    ("a key twice", ROW_TWICE_TYPED, 400, "key 'type' twice"),
    ("a key twice, spaced", b'[{"type" : "started" , "type":"started"}]', 400, "key 'type' twice"),
    ("a key twice in a nested object",
     b'[{"type": "started", "x": [{"a": 1, "b": {"c": 1, "c": 2}}]}]', 400, "key 'c' twice"),
    ("a key twice, an escaped colon to even the count",
     b'[{"type": "row_failed", "row": 1, "email": "a@b", "error": "z", "error": "x\\u003ay"}]',
     400, "key 'error' twice"),
    ("a key twice, written once escaped",
     b'[{"type": "started", "\\u0074ype": "succeeded"}]', 400, "key 'type' twice"),
]


async def log_snapshot(store: Store) -> list[Any]:
    return await store.read_log(0, 100_000)


def assert_nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No warning, error or traceback was logged (an access log's INFO lines aside)."""
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == []


def raw_request(target: bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    """An HTTP/1.1 request as bytes, for what no client library would send."""
    lines = [method + b" " + target + b" HTTP/1.1", b"Host: test", b"Connection: close",
             *headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send_raw(client: TestClient, request: bytes) -> bytes:
    """Send `request` as is on a new connection; everything the server answers until it closes."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()


def status_and_detail(answer: bytes) -> tuple[int, str]:
    """The status of a raw answer and the `detail` of its JSON body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body)["detail"]


@pytest.mark.parametrize(("case", "body", "status", "detail"), EVENT_BODIES,
                         ids=[c[0] for c in EVENT_BODIES])
async def test_bad_event_batches_are_refused_and_write_nothing(
    client: TestClient, owner_key: IssuedKey, store: Store, caplog: pytest.LogCaptureFixture,
    case: str, body: bytes, status: int, detail: str,
) -> None:
    """Every hostile batch gets its 4xx and a detail naming the problem; the log is unchanged."""
    headers = {"X-API-Key": owner_key.secret}
    created = await client.post("/api/v1/jobs", json={"job_id": "target"}, headers=headers)
    assert created.status == 201
    before = await log_snapshot(store)
    response = await client.post(
        "/api/v1/jobs/target/events", data=io.BytesIO(body), headers=headers
    )
    assert response.status == status, await response.text()
    assert detail in (await response.json())["detail"]
    assert await log_snapshot(store) == before
    assert_nothing_logged(caplog)


PATH_IDS = [
    "'; DROP TABLE events;--", "../../etc/passwd", "..%2F..%2Fjobs", "a" * 129, "%00",
    "job%20id", "\u202ejob", "x" * 5000, "null", "🙂",
]


@pytest.mark.parametrize("job_id", PATH_IDS, ids=range(len(PATH_IDS)))
async def test_hostile_job_ids_in_the_path_are_404_and_write_nothing(
    client: TestClient, owner_key: IssuedKey, store: Store, job_id: str
) -> None:
    """SQL, path and Unicode tricks in an id are ids that do not exist, or paths we do not serve."""
    headers = {"X-API-Key": owner_key.secret}
    before = await log_snapshot(store)
    read = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
    write = await client.post(f"/api/v1/jobs/{job_id}/events", json=[ROW], headers=headers)
    for response in (read, write):
        assert response.status in (404, 414), await response.text()
        # `../` may be resolved before routing (an unknown route): a 404 with a detail all the same
        assert (await response.json())["detail"] in ("Job not found", "Not Found")
    assert await log_snapshot(store) == before


CREATE_BODIES: list[tuple[str, Any, int, str]] = [
    ("SQL in job_id", {"job_id": "x'; DROP TABLE jobs;--"}, 422, "job_id"),
    ("slash in job_id", {"job_id": "a/b"}, 422, "job_id"),
    ("129-character job_id", {"job_id": "a" * 129}, 422, "job_id"),
    ("negative total", {"total": -1}, 422, "total"),
    ("total as text", {"total": "50"}, 422, "total"),
    ("NUL in label", {"label": "a\x00"}, 422, "label"),
    ("a list", [1, 2], 400, "JSON object"),
    ("job_id twice", b'{"job_id": "a", "job_id": "b"}', 400, "key 'job_id' twice"),
    ("job_id '.'", {"job_id": "."}, 422, "job_id: "),
    ("job_id '..'", {"job_id": ".."}, 422, "job_id: "),
    ("percent in job_id", {"job_id": "a%2Fb"}, 422, "job_id: "),
    ("question mark in job_id", {"job_id": "a?b"}, 422, "job_id: "),
    ("hash in job_id", {"job_id": "a#b"}, 422, "job_id: "),
]


@pytest.mark.parametrize(("case", "body", "status", "detail"), CREATE_BODIES,
                         ids=[c[0] for c in CREATE_BODIES])
async def test_bad_creation_requests_are_refused_and_write_nothing(
    client: TestClient, owner_key: IssuedKey, store: Store, caplog: pytest.LogCaptureFixture,
    case: str, body: Any, status: int, detail: str,
) -> None:
    """Job creation refuses hostile bodies with a detail naming the field."""
    sent = {"data": body} if isinstance(body, bytes) else {"json": body}
    response = await client.post("/api/v1/jobs", headers={"X-API-Key": owner_key.secret}, **sent)
    assert response.status == status
    assert detail in (await response.json())["detail"]
    assert await log_snapshot(store) == []
    assert_nothing_logged(caplog)


async def test_odd_but_valid_unicode_is_kept_exactly(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Emoji, right-to-left marks and combining accents are valid text, kept exactly as sent."""
    headers = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "uni"}, headers=headers)
    email, error = "jos\u0065\u0301@uni.edu", "\u202eoops 🙂 \u05e9\u05dc\u05d5\u05dd"
    await client.post(
        "/api/v1/jobs/uni/events",
        json=[{"type": "row_failed", "row": 1, "email": email, "error": error},
              {"type": "succeeded"}],
        headers=headers,
    )
    body = await (await client.get("/api/v1/jobs/uni", headers=headers)).json()
    assert body["result"]["errors"] == [{"row": 1, "email": email, "error": error}]


async def test_colons_quotes_and_braces_inside_text_are_not_taken_for_keys(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """Text full of JSON punctuation, escaped or not, is valid and kept exactly."""
    headers = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "punct"}, headers=headers)
    error = 'a "b": {"c": 1, "c": 2} \\: \\u003a :'
    body = (b'[{"type": "row_failed", "row": 1, "email": "a\\u003ab@uni.edu", "error": '
            + orjson.dumps(error) + b'}, {"type"\n:\t"succeeded"}]')
    appended = await client.post("/api/v1/jobs/punct/events", data=body, headers=headers)
    assert appended.status == 200, await appended.text()
    job = await (await client.get("/api/v1/jobs/punct", headers=headers)).json()
    assert job["result"]["errors"] == [{"row": 1, "email": "a:b@uni.edu", "error": error}]


BAD_API_KEYS = [b"uc_live_" + b"\xff" * 40, b"\xff\xfe", b"uc_live_" + "ñ".encode() * 20]


@pytest.mark.parametrize("secret", BAD_API_KEYS, ids=["invalid UTF-8", "short", "non-ASCII"])
async def test_an_api_key_that_is_not_ascii_is_401(
    client: TestClient, store: Store, caplog: pytest.LogCaptureFixture, secret: bytes
) -> None:
    """An X-API-Key of bytes no key is made of is an unknown key (401), on every route."""
    key = b"X-API-Key: " + secret
    for request in (
        raw_request(b"/api/v1/jobs/abc", key),
        raw_request(b"/api/v1/jobs", key, method=b"POST", body=b"{}"),
        raw_request(b"/api/v1/jobs/abc/events", key, method=b"POST", body=orjson.dumps([ROW])),
        raw_request(b"/api/v1/jobs/abc/stream", key),
    ):
        assert status_and_detail(await send_raw(client, request)) == (
            401, "Invalid or revoked API key")
    assert await log_snapshot(store) == []
    assert_nothing_logged(caplog)


STARTED = orjson.dumps([{"type": "started"}])
ENCODED_BODIES: list[tuple[str, str, bytes, int, str]] = [
    ("gzip that is not gzip", "gzip", b"plainly not gzip", 400, "gzip"),
    ("truncated gzip", "gzip", gzip.compress(STARTED)[:-12], 400, "gzip"),
    ("gzip with bytes after it", "gzip", gzip.compress(STARTED) + b"trailing", 400, "gzip"),
    ("deflate that is not deflate", "deflate", b"\x78\x9cnot deflate", 400, "deflate"),
    ("brotli, which the server does not read", "br", STARTED, 415, "'br'"),
    ("a made-up coding", "x-foo", STARTED, 415, "'x-foo'"),
    ("two codings stacked", "gzip, gzip", gzip.compress(gzip.compress(STARTED)), 415,
     "'gzip, gzip'"),
    ("gzip that inflates past 1 MiB", "gzip", gzip.compress(b" " * 2_000_000 + STARTED), 413,
     "larger than"),
]


@pytest.mark.parametrize(("case", "coding", "body", "status", "detail"), ENCODED_BODIES,
                         ids=[c[0] for c in ENCODED_BODIES])
async def test_a_body_in_a_coding_we_cannot_read_is_refused(
    client: TestClient, owner_key: IssuedKey, store: Store, caplog: pytest.LogCaptureFixture,
    case: str, coding: str, body: bytes, status: int, detail: str,
) -> None:
    """A body that does not decompress is 400, one in a coding we do not read 415: never stored."""
    headers = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "coded"}, headers=headers)
    before = await log_snapshot(store)
    response = await client.post("/api/v1/jobs/coded/events", data=body,
                                 headers={**headers, "Content-Encoding": coding})
    assert response.status == status, await response.text()
    assert detail in (await response.json())["detail"]
    assert await log_snapshot(store) == before
    assert_nothing_logged(caplog)


def raw_deflate(data: bytes) -> bytes:
    """Deflate without the zlib wrapper, as some clients send `deflate`."""
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


COMPRESSORS: list[tuple[str, str, Callable[[bytes], bytes]]] = [
    ("gzip", "gzip", gzip.compress),
    ("GZIP", "GZIP", gzip.compress),
    ("x-gzip", "x-gzip", gzip.compress),
    ("deflate", "deflate", zlib.compress),
    ("raw deflate", "deflate", raw_deflate),
    ("identity", "identity", bytes),
]


@pytest.mark.parametrize(("coding", "compress"), [c[1:] for c in COMPRESSORS],
                         ids=[c[0] for c in COMPRESSORS])
async def test_a_gzip_or_deflate_body_is_read_as_its_json(
    client: TestClient, owner_key: IssuedKey, coding: str, compress: Callable[[bytes], bytes]
) -> None:
    """A batch (or a creation) compressed with gzip or deflate is appended like a plain one."""
    headers = {"X-API-Key": owner_key.secret}
    created = await client.post("/api/v1/jobs", data=compress(b'{"job_id": "zipped"}'),
                                headers={**headers, "Content-Encoding": coding})
    assert created.status == 201, await created.text()
    batch = orjson.dumps([{"type": "progress", "current": 1, "total": 2}])
    appended = await client.post("/api/v1/jobs/zipped/events", data=compress(batch),
                                 headers={**headers, "Content-Encoding": coding})
    assert await appended.json() == {"appended": 1, "duplicates": 0, "version": 2}
    job = await (await client.get("/api/v1/jobs/zipped", headers=headers)).json()
    assert job["progress"]["current"] == 1


BAD_QUERIES: list[tuple[str, str, list[tuple[str, str]], int, str]] = [
    ("wait of a superscript two", "", [("wait", "²")], 422, "wait: "),
    ("wait of an Arabic-Indic one", "", [("wait", "\u0661")], 422, "wait: "),
    ("wait of 5,000 digits", "", [("wait", "1" * 5000)], 422, "wait: "),
    ("wait twice", "", [("wait", "1"), ("wait", "70")], 400, "wait: "),
    ("limit of a superscript two", "/events", [("limit", "²")], 422, "limit: "),
    ("limit of an Arabic-Indic three", "/events", [("limit", "\u0663")], 422, "limit: "),
    ("limit twice", "/events", [("limit", "1"), ("limit", "2")], 400, "limit: "),
    ("after_version of 5,000 digits", "/events", [("after_version", "9" * 5000)], 422,
     "after_version: "),
    ("after_version twice", "/events", [("after_version", "0"), ("after_version", "1")], 400,
     "after_version: "),
    ("after_row of an Arabic-Indic one", "/errors", [("after_row", "\u0661")], 422,
     "after_row: "),
    ("after_row twice", "/errors", [("after_row", "1"), ("after_row", "1")], 400, "after_row: "),
]


@pytest.mark.parametrize(("case", "route", "query", "status", "detail"), BAD_QUERIES,
                         ids=[c[0] for c in BAD_QUERIES])
async def test_bad_numbers_and_repeats_in_the_query_are_refused_naming_the_parameter(
    client: TestClient, owner_key: IssuedKey, caplog: pytest.LogCaptureFixture,
    case: str, route: str, query: list[tuple[str, str]], status: int, detail: str,
) -> None:
    """Only ASCII digits make a number, and a parameter given twice is not guessed at."""
    headers = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "queried"}, headers=headers)
    response = await client.get(f"/api/v1/jobs/queried{route}", params=query,
                                headers={**headers, "If-None-Match": '"1"'})
    assert response.status == status, await response.text()
    assert (await response.json())["detail"].startswith(detail)
    assert_nothing_logged(caplog)


LAST_EVENT_IDS = ["²".encode(), "\u0661".encode(), b"9" * 5000, b"-1", b"\xff"]


@pytest.mark.parametrize("last_event_id", LAST_EVENT_IDS,
                         ids=["superscript", "Arabic-Indic", "5,000 digits", "negative",
                              "invalid UTF-8"])
async def test_a_bad_last_event_id_is_refused_before_the_stream_starts(
    client: TestClient, owner_key: IssuedKey, caplog: pytest.LogCaptureFixture,
    last_event_id: bytes,
) -> None:
    """The stream answers 422 and nothing else: no 200 is sent first and broken off."""
    headers = {"X-API-Key": owner_key.secret}
    await client.post("/api/v1/jobs", json={"job_id": "streamed"}, headers=headers)
    answer = await send_raw(client, raw_request(
        b"/api/v1/jobs/streamed/stream", b"X-API-Key: " + owner_key.secret.encode(),
        b"Last-Event-ID: " + last_event_id,
    ))
    assert answer.count(b"HTTP/1.1 ") == 1, answer[:200]
    status, detail = status_and_detail(answer)
    assert (status, detail.split(":")[0]) == (422, "Last-Event-ID")
    assert_nothing_logged(caplog)


VALID_IDS = ["abc123-task-id", str(uuid.uuid4()), uuid.uuid4().hex, "...", ".hidden", "a.",
             "celery:task:42", "v1.2_x-y", "a" * 128]


async def test_every_kind_of_valid_job_id_is_created_and_reachable(
    client: TestClient, owner_key: IssuedKey
) -> None:
    """The seed's id, UUIDs, dots that are not a whole `.` or `..`: created, then read back."""
    headers = {"X-API-Key": owner_key.secret}
    for job_id in VALID_IDS:
        created = await client.post("/api/v1/jobs", json={"job_id": job_id}, headers=headers)
        assert created.status == 201, (job_id, await created.text())
        read = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert await read.json() == {"job_id": job_id, "status": "PENDING"}


UNPARSABLE_REQUESTS = [
    ("a control character in the path", raw_request(b"/api/v1/jobs/a\x01b")),
    ("raw UTF-8 in the query", raw_request("/api/v1/jobs/a?wait=²".encode())),
    ("a request line over 8 KB", raw_request(b"/api/v1/jobs/" + b"a" * 9000)),
    ("200 headers", raw_request(b"/api/v1/jobs/a", *(b"X-H%d: 1" % i for i in range(200)))),
    ("Content-Length and Transfer-Encoding",
     b"POST /api/v1/jobs HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("request_bytes", [r[1] for r in UNPARSABLE_REQUESTS],
                         ids=[r[0] for r in UNPARSABLE_REQUESTS])
async def test_a_request_aiohttp_cannot_parse_is_400_and_logs_nothing(
    client: TestClient, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    """aiohttp's parser answers these itself (a text body we cannot shape); the log stays quiet."""
    answer = await send_raw(client, request_bytes)
    assert answer.startswith(b"HTTP/1.0 400 "), answer[:200]
    assert_nothing_logged(caplog)
