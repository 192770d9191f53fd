"""The GET benchmark's reference: a bare aiohttp handler returning fixed bytes after a key check.

It does the least a correct GET must: match the same route, check that the X-API-Key header is
there and equal to the one key, and answer the job's body, already encoded. Run as a script:
`python bare_server.py --port P --job-id ID --key KEY --body FILE`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiohttp import web


def bare_app(job_id: str, key: str, body: bytes) -> web.Application:
    """An app with one route that answers `body` for `job_id` to the holder of `key`."""
    unauthorized = b'{"detail":"Invalid or revoked API key"}'
    not_found = b'{"detail":"Job not found"}'

    async def get_job(request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") != key:
            return web.Response(body=unauthorized, status=401, content_type="application/json")
        if request.match_info["job_id"] != job_id:
            return web.Response(body=not_found, status=404, content_type="application/json")
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_get("/api/v1/jobs/{job_id}", get_job, allow_head=False)
    return app


def main() -> None:
    """Serve until SIGTERM/SIGINT, with aiohttp's defaults (as a bare app would run)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--body", type=Path, required=True)
    args = parser.parse_args()
    app = bare_app(args.job_id, args.key, args.body.read_bytes())
    web.run_app(app, host=args.host, port=args.port, print=lambda msg: print(msg, flush=True))


if __name__ == "__main__":
    main()
