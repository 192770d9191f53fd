"""Logs: one line per record, as text or JSON, tagged with its request's id, never with a secret.

Every request gets an id (`X-Request-ID`: the caller's when it is a sane token, else one made
here), echoed in the response and set in a context variable that the request's own task carries,
so every line logged while it is served names it. Every line passes through `redact` last: API
keys, key hashes, webhook secrets and URL passwords are masked whatever put them there. No line
ever carries a request body or a query string. The access log is in `access`.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
import secrets
import sys
import threading
import time
from contextvars import ContextVar
from typing import Any

import orjson

from jobtracker.domain.errors import ConfigError
from jobtracker.store.url import masked

REQUEST_ID_HEADER = "X-Request-ID"
#: A request id we take from the caller (CONTRACT.md, "Operations").
_SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: The id of the request the current task serves; log records take it from here.
REQUEST_ID: ContextVar[str | None] = ContextVar("jobtracker_request_id", default=None)
#: Ids made here: unique per process (a random prefix) and cheap (a counter).
ID_PREFIX = secrets.token_hex(6)
#: The ids made here, in order (`next` of it: no Python frame, on every request without an id).
NEW_REQUEST_IDS = map(f"{ID_PREFIX}-{{:x}}".format, itertools.count(1))

#: What is masked in every line: API keys, webhook secrets, SHA-256 hex digests (key hashes).
_SECRETS = re.compile(
    r"uc_live_[A-Za-z0-9_-]*|whsec_[A-Za-z0-9+/=_-]*"
    r"|(?<![0-9A-Fa-f])[0-9A-Fa-f]{64}(?![0-9A-Fa-f])"
)
REDACTED = "[redacted]"
#: Hex digits in a SHA-256 digest (a key hash).
HASH_LENGTH = 64
LOG_FORMATS = ("text", "json")
ACCESS_LOGGER_NAME = "jobtracker.access"
#: At most this many seconds pass before a buffered log line is written out.
FLUSH_EVERY = 0.25


def request_id_for(given: str | None) -> str:
    """The caller's `X-Request-ID` when it is 1-128 characters of `A-Za-z0-9._-`, else a new id."""
    if given is not None and _SANE_ID.fullmatch(given):
        return given
    return next(NEW_REQUEST_IDS)


def redact(text: str) -> str:
    """`text` with every API key, webhook secret, key hash and URL password masked."""
    if len(text) < HASH_LENGTH and "uc_live_" not in text and "whsec_" not in text:
        return masked(text)  # too short for a key hash, no key: the usual path or id
    return masked(_SECRETS.sub(REDACTED, text))


class LineFormatter(logging.Formatter):
    """Makes the line of a record, or of an access (`access.AccessLog`, which makes no record)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""
        self.pid = os.getpid()  # records no longer look it up (see `configure`)

    def timestamp(self, when: float) -> str:
        """`when` in UTC with milliseconds, `2026-12-04T10:00:05.120Z`."""
        # The date part changes once a second; building it costs more than the rest of a line.
        second = int(when)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((when - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        """The record's line, redacted."""
        exception = self.formatException(record.exc_info) if record.exc_info else None
        line = self.line(record.created, record.levelname, record.name, record.getMessage(),
                         getattr(record, "request_id", None) or REQUEST_ID.get(), exception)
        return redact(line)

    def line(self, when: float, level: str, logger: str, message: str, request_id: str | None,
             exception: str | None = None) -> str:
        """One line; each format makes its own."""
        raise NotImplementedError

    def access_line(self, when: float, request_id: str | None, access: dict[str, Any]) -> bytes:
        """An access log line (`access.AccessLog`), encoded, with its newline."""
        raise NotImplementedError


class TextFormatter(LineFormatter):
    """`time level logger message`, then `request_id=…` when there is one."""

    def line(self, when: float, level: str, logger: str, message: str, request_id: str | None,
             exception: str | None = None) -> str:
        """The line (an exception's traceback follows on lines of its own)."""
        text = f"{self.timestamp(when)} {level} {logger} {message}"
        if request_id is not None:
            text = f"{text} request_id={request_id}"
        return text if exception is None else f"{text}\n{exception}"

    def access_line(self, when: float, request_id: str | None, access: dict[str, Any]) -> bytes:
        """`… INFO jobtracker.access 10.0.0.7 "GET /path" 200 0.41 ms request_id=…`."""
        message = (f'{access["remote"]} "{access["method"]} {access["path"]}" '
                   f'{access["status"]} {access["duration"] * 1000:.2f} ms')
        return (self.line(when, "INFO", ACCESS_LOGGER_NAME, message, request_id) + "\n").encode()


class JsonFormatter(LineFormatter):
    """One JSON object per line: time, level, logger, message, the request's fields, pid."""

    def line(self, when: float, level: str, logger: str, message: str, request_id: str | None,
             exception: str | None = None) -> str:
        """The line."""
        entry: dict[str, Any] = {
            "time": self.timestamp(when), "level": level, "logger": logger, "message": message,
        }
        if request_id is not None:
            entry["request_id"] = request_id
        entry["pid"] = self.pid
        if exception is not None:
            entry["exception"] = exception
        return orjson.dumps(entry).decode()

    def access_line(self, when: float, request_id: str | None, access: dict[str, Any]) -> bytes:
        """`{"time", "level", "logger", "message": "GET /path 200", method, route, path, status,
        duration, remote, request_id, pid}`."""
        entry: dict[str, Any] = {
            "time": self.timestamp(when), "level": "INFO", "logger": ACCESS_LOGGER_NAME,
            "message": f'{access["method"]} {access["path"]} {access["status"]}', **access,
            "request_id": request_id, "pid": self.pid,
        }
        return orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)


class BufferedStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr through a 64 KiB buffer: written out every `FLUSH_EVERY` s, when full, at exit, and
    at once for a WARNING or worse.

    A write per line made each access line cost a system call, the largest part of its cost on
    our benchmark machine; the price is that INFO lines show up to `FLUSH_EVERY` s late, and
    those of the last moment are lost if the process is killed with SIGKILL.
    """

    def __init__(self, formatter: LineFormatter) -> None:
        raw = io.FileIO(os.dup(sys.stderr.fileno()), "w")
        super().__init__(io.BufferedWriter(raw, 1 << 16))
        self.setFormatter(formatter)
        self.lines = formatter
        threading.Thread(target=self._flush_now_and_then, name="jobtracker-log-flush",
                         daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer the line; write it out at once if it is a warning or worse."""
        try:
            self.stream.write((self.format(record) + "\n").encode("utf-8", "backslashreplace"))
            if record.levelno >= logging.WARNING:
                self.stream.flush()
        except Exception:
            self.handleError(record)

    def write_line(self, line: bytes) -> None:
        """Buffer an encoded line made without a record (the access log's)."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line)

    def _flush_now_and_then(self) -> None:
        while True:
            time.sleep(FLUSH_EVERY)
            self.flush()


def configure(log_format: str) -> BufferedStderr:
    """Send every log record to stderr as `log_format` ('text' or 'json'), at INFO and above;
    the handler, which the access log writes to directly."""
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
    handler = BufferedStderr(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # Nothing we write shows a record's thread or process names, which every record looks up
    # otherwise.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    return handler
