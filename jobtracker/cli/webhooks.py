"""Webhook flags of `jobtracker serve`; `jobtracker webhooks run`, a dispatcher on its own."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from jobtracker.server.config import HelpFormatter, apply_env_defaults
from jobtracker.server.settings import Settings


def _delays(text: str) -> tuple[float, ...]:
    """`5,30,120` as seconds; each more than 0."""
    try:
        delays = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a list of seconds like 5,30,120") from None
    if not delays or any(d <= 0 for d in delays):
        raise argparse.ArgumentTypeError(f"{text!r}: every delay must be more than 0 seconds")
    return delays


def _seconds(text: str) -> float:
    """A number of seconds, more than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 seconds")
    return value


def add_webhook_arguments(parser: argparse.ArgumentParser, *, switch: bool) -> None:
    """The delivery flags; with `switch`, also `--webhooks on|off` (serve's)."""
    defaults = Settings()
    if switch:
        parser.add_argument("--webhooks", choices=("on", "off"), default="on",
                            help="deliver webhooks from this server (off: run `jobtracker "
                                 "webhooks run` apart, or deliver none)")
    parser.add_argument("--webhook-allow-http", action=argparse.BooleanOptionalAction,
                        default=defaults.webhook_allow_http,
                        help="accept http:// webhook URLs, not only https://")
    parser.add_argument("--webhook-allow-private", action=argparse.BooleanOptionalAction,
                        default=defaults.webhook_allow_private,
                        help="allow webhooks to loopback, private, link-local and multicast "
                             "addresses (refused by default: server-side request forgery)")
    parser.add_argument("--webhook-progress-interval", type=_seconds,
                        default=defaults.webhook_progress_interval,
                        help="seconds between job.progress deliveries of one job")
    parser.add_argument("--webhook-retry-delays", type=_delays,
                        default=",".join(f"{d:g}" for d in defaults.webhook_retry_delays),
                        help="seconds between tries of a failed delivery, comma-separated; the "
                             "last repeats")
    parser.add_argument("--webhook-give-up", type=_seconds, default=defaults.webhook_give_up,
                        help="seconds after its first try that a delivery is marked failed")
    parser.add_argument("--webhook-lease", type=_seconds, default=defaults.webhook_lease,
                        help="seconds a server holds the deliveries it took; a dead server's "
                             "are taken over after this")


def webhook_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The `Settings` fields the webhook flags set."""
    found = {
        "webhook_allow_http": args.webhook_allow_http,
        "webhook_allow_private": args.webhook_allow_private,
        "webhook_progress_interval": args.webhook_progress_interval,
        "webhook_retry_delays": args.webhook_retry_delays,
        "webhook_give_up": args.webhook_give_up,
        "webhook_lease": args.webhook_lease,
    }
    if hasattr(args, "webhooks"):
        found["webhooks"] = args.webhooks == "on"
    return found


def cmd_webhooks_run(args: argparse.Namespace) -> int:
    """Deliver webhooks from the store until interrupted, serving no API."""
    from jobtracker.server import logs
    from jobtracker.server.webhooks.running import run_alone

    logs.configure("text")
    asyncio.run(run_alone(Settings(store_url=args.store, **webhook_settings(args))))
    return 0


def add_webhooks_command(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
) -> None:
    """`webhooks run`; its flags take their defaults from `environ`'s JOBTRACKER_* variables, as
    serve's do (the same variables configure both)."""
    webhooks = commands.add_parser("webhooks", help="deliver webhooks apart from the API")
    sub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    run = sub.add_parser("run", parents=[common], formatter_class=HelpFormatter,
                         help="deliver webhooks from the store until interrupted")
    add_webhook_arguments(run, switch=False)
    if environ is not None:
        apply_env_defaults(run, environ)
    run.set_defaults(run=cmd_webhooks_run)
