"""An example webhook receiver: verifies each delivery, drops repeats, prints what happened.

    JOBTRACKER_WEBHOOK_SECRET=whsec_... python scripts/webhook_receiver.py --port 9000

Then subscribe it (the server needs `--webhook-allow-http --webhook-allow-private` to call a
receiver on your own machine; in production use https:// on a public address):

    curl -X POST http://127.0.0.1:8080/api/v1/webhooks -H "X-API-Key: $KEY" \\
         -d '{"url": "http://127.0.0.1:9000/hook", "events": ["job.succeeded", "job.failed"]}'

Deliveries come at least once: a repeat carries the same `webhook-id`, so a receiver that acts
on them (sends an e-mail, say) keeps the ids it has handled. Answer 2xx quickly and do slow work
later; anything else, or no answer within 10 s, is retried; 410 Gone disables the webhook.
"""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict

from aiohttp import web

from jobtracker.webhooks import WebhookVerificationError, verify

SEEN = web.AppKey("seen", OrderedDict)


async def hook(request: web.Request) -> web.Response:
    """One delivery: 401 when forged, 204 otherwise (repeats too, handled once)."""
    body = await request.read()
    try:
        event = verify(request.headers, body, request.app[SECRET])
    except WebhookVerificationError:
        return web.Response(status=401, text="bad signature")
    seen = request.app[SEEN]
    msg_id = request.headers["webhook-id"]
    if msg_id not in seen:
        seen[msg_id] = True
        if len(seen) > 100_000:
            seen.popitem(last=False)
        data = event["data"]
        print(f"{event['timestamp']} {event['type']:<22} {data['job_id']} {data['status']}",
              flush=True)
    return web.Response(status=204)


SECRET = web.AppKey("secret", str)


def main() -> None:
    """Serve `/hook` until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    secret = os.environ.get("JOBTRACKER_WEBHOOK_SECRET")
    if not secret:
        parser.error("set JOBTRACKER_WEBHOOK_SECRET to the secret the subscription answered")
    app = web.Application()
    app[SECRET] = secret
    app[SEEN] = OrderedDict()
    app.router.add_post("/hook", hook)
    web.run_app(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
