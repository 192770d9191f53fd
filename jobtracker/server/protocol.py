"""Below the routes: what aiohttp's connection handler is told, and a request body's coding.

aiohttp would inflate gzip and deflate bodies itself, but a body that does not inflate then fails
inside `request.read()` as an exception of its own, a coding it does not know reaches the handler
as if it were plain JSON, and brotli is refused by its parser in plain text (or read, if the
Brotli package happens to be installed). So the server turns that off and reads the coding here,
where every answer is ours.

What aiohttp's parser refuses (a bad URL character, an 8 KB request line, too many headers,
Content-Length with Transfer-Encoding) never reaches the app: `RequestHandler.handle_error`
answers it with a text/plain 400 that no middleware sees. All the app can choose is the logger
that reports it, and that one leaves client errors out.
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

from aiohttp.http_exceptions import BadHttpMessage

from jobtracker.domain.errors import MalformedRequest, PayloadTooLarge, UnsupportedEncoding

#: Where aiohttp's connection handler reports a request that failed outside every handler.
PROTOCOL_LOGGER = "jobtracker.server.http"
#: The content codings a request body may come in, and zlib's window bits for each.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _WithoutClientErrors(logging.Filter):
    """Drop the traceback aiohttp logs for each request its parser refused: the client had its
    400, and a traceback per malformed request would let anyone fill the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], BadHttpMessage))


def handler_args() -> dict[str, Any]:
    """What `web.Application(handler_args=...)` gives aiohttp's handler of each connection."""
    logger = logging.getLogger(PROTOCOL_LOGGER)
    if not any(isinstance(each, _WithoutClientErrors) for each in logger.filters):
        logger.addFilter(_WithoutClientErrors())
    return {"auto_decompress": False, "logger": logger}


def decoded_body(body: bytes, coding: str | None, limit: int) -> bytes:
    """`body` as it was before its `Content-Encoding` (at most `limit` bytes of it).

    Unknown codings are refused (415) whatever the body; gzip (`x-gzip` too) and deflate are
    inflated, and bytes that do not inflate completely are refused (400).
    """
    name = (coding or "identity").lower()
    if name == "identity":
        return body
    if name not in _WBITS:
        raise UnsupportedEncoding(
            f"Content-Encoding {name[:40]!r} is not supported: send gzip, deflate or identity"
        )
    if not body:
        return body
    wbits = _WBITS[name]
    if name == "deflate" and body[0] & 0x0F != 8:
        wbits = -zlib.MAX_WBITS  # no zlib header: raw deflate, which clients send too
    return _inflated(body, wbits, name, limit)


def _inflated(body: bytes, wbits: int, name: str, limit: int) -> bytes:
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise MalformedRequest(f"Body does not decompress as {name}") from None
    if len(data) > limit:
        raise PayloadTooLarge(f"Request body is larger than {limit} bytes")
    if not inflater.eof or inflater.unused_data:
        raise MalformedRequest(f"Body does not decompress as {name}: it is cut short or "
                               "has bytes after its end")
    return data
