"""`jobtracker watch JOB_ID`: a live progress bar over the job's event stream.

It reads `GET /api/v1/jobs/{job_id}/stream` (one body per change), draws rows done of total, the
rows failed so far, the rate and the time left with tqdm on stderr, and prints the terminal body
as JSON on stdout: exit 0 on SUCCESS, 1 on FAILURE, 2 when there is no answer (a refused key, an
unknown job, no server). A stream that ends early (the server restarting) is resumed with
`Last-Event-ID`, as the server asks, for up to `RESUME_FOR` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import httpx
from tqdm import tqdm

from jobtracker.cli.remote import add_server_arguments, failed, server_and_key
from jobtracker.domain.errors import JobtrackerError, StoreUnavailable
from jobtracker.sdk.http import api_root
from jobtracker.sdk.transport import error_from_response

#: Seconds a dropped stream is retried before the command gives up.
RESUME_FOR = 30.0
#: The server sends a heartbeat comment after 30 s of silence: longer than that is a dead line.
READ_TIMEOUT = 75.0
#: At most one `/errors` request (the failed-row count) per this many seconds.
FAILURES_EVERY = 1.0
EXIT_FOR = {"SUCCESS": 0, "FAILURE": 1}


def add_watch_command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    formatter: type[argparse.HelpFormatter],
) -> None:
    """`watch JOB_ID [--server URL] [--key KEY]`."""
    watch = commands.add_parser(
        "watch", formatter_class=formatter,
        help="follow a job with a live progress bar; exit 0 on SUCCESS, 1 on FAILURE",
    )
    watch.add_argument("job_id", metavar="JOB_ID", help="the job's id")
    add_server_arguments(watch)
    watch.set_defaults(run=cmd_watch, store=None)


def cmd_watch(args: argparse.Namespace) -> int:
    """Follow the job to its end; print the terminal body."""
    server = ""
    try:
        server, key = server_and_key(args)
        with httpx.Client(
            base_url=api_root(server), headers={"X-API-Key": key},
            timeout=httpx.Timeout(10.0, read=READ_TIMEOUT),
        ) as client:
            final = Watcher(client, args.job_id, sys.stderr).run()
    except JobtrackerError as exc:
        return failed(server, exc)
    print(json.dumps(final, indent=2, ensure_ascii=False))
    return EXIT_FOR[final["status"]]


def _unreachable(exc: httpx.TransportError) -> StoreUnavailable:
    return StoreUnavailable(f"could not reach the server: {exc or type(exc).__name__}")


def _short(job_id: str) -> str:
    """The job id as the bar's label: a UUID's first 8 characters leave the bar room."""
    return job_id if len(job_id) <= 12 else job_id[:8] + "…"


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str | None, str]]:
    """(id, data) of each event of a `text/event-stream`; comments and `retry:` skipped."""
    event_id: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event_id, "\n".join(data)
            data = []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "id":
            event_id = value


class Watcher:
    """One job's stream, resumed when it drops, drawn as a bar until its terminal body."""

    def __init__(self, client: httpx.Client, job_id: str, out: TextIO) -> None:
        self._client = client
        self._job_id = job_id
        self._out = out
        self._last_id: str | None = None
        self._bar: tqdm[Any] | None = None
        self._failures_at = 0.0
        self._failed = 0
        self._heard = False

    def run(self) -> dict[str, Any]:
        """The terminal body; `JobtrackerError` when the server refuses or cannot be reached."""
        giving_up_at: float | None = None
        try:
            while True:
                self._heard = False
                try:
                    final = self._follow()
                except StoreUnavailable:
                    if self._last_id is None:  # never got an answer: say so at once
                        raise
                    final = None
                if final is not None:
                    return final
                now = time.monotonic()
                if self._heard or giving_up_at is None:
                    giving_up_at = now + RESUME_FOR
                if now >= giving_up_at:
                    raise StoreUnavailable(f"the stream of job {self._job_id} ended, and could "
                                           f"not be resumed for {RESUME_FOR:.0f} s")
                time.sleep(2.0)  # the server's `retry:` advice
        finally:
            if self._bar is not None:
                self._bar.close()

    def _follow(self) -> dict[str, Any] | None:
        """Read the stream until the terminal body (returned) or its end (None)."""
        headers = {"Accept": "text/event-stream"}
        if self._last_id is not None:
            headers["Last-Event-ID"] = self._last_id
        try:
            with self._client.stream(
                "GET", f"/jobs/{self._job_id}/stream", headers=headers
            ) as response:
                if response.status_code >= 400:
                    raise error_from_response(response.status_code, response.read())
                for event_id, data in sse_events(response.iter_lines()):
                    self._last_id = event_id or self._last_id
                    self._heard = True
                    body: dict[str, Any] = json.loads(data)
                    self._draw(body)
                    if body["status"] in EXIT_FOR:
                        return body
        except httpx.TransportError as exc:
            raise _unreachable(exc) from None
        return None

    def _draw(self, body: dict[str, Any]) -> None:
        """Move the bar to what `body` says."""
        status = body["status"]
        progress = body.get("progress") or {}
        result = body.get("result") or {}
        done = progress.get("current", result.get("total", 0))
        total = progress.get("total", result.get("total"))
        if self._bar is None:
            self._bar = tqdm(desc=_short(self._job_id), total=total, initial=done, unit="row",
                             file=self._out, dynamic_ncols=True, smoothing=0.1)
        bar = self._bar
        if total is not None and total != bar.total:
            bar.total = total
        postfix = {"status": status, **self._counts(status, result)}
        bar.set_postfix(postfix, refresh=False)
        if status != "FAILURE" and done != bar.n:  # a FAILURE body says nothing of rows
            bar.update(done - bar.n)
        else:
            bar.refresh()

    def _counts(self, status: str, result: dict[str, Any]) -> dict[str, Any]:
        """Rows succeeded and failed: from the result at the end, the failures on the way."""
        if status == "SUCCESS":
            return {"ok": result.get("successful", 0), "failed": result.get("failed", 0)}
        if status != "PROGRESS":
            return {}
        now = time.monotonic()
        if now - self._failures_at >= FAILURES_EVERY:
            self._failures_at = now
            self._failed = self._failed_rows()
        return {"failed": self._failed}

    def _failed_rows(self) -> int:
        """The job's failed rows so far (`errors_total`); the last count if the server balks."""
        try:
            answer = self._client.get(f"/jobs/{self._job_id}/errors", params={"limit": 1})
        except httpx.TransportError:
            return self._failed
        if answer.status_code != 200:
            return self._failed
        return int(answer.json().get("errors_total", self._failed))
