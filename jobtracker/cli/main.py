"""The `jobtracker` command: serve, migrate, keys, replay, demo."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from jobtracker.domain.errors import ConfigError, JobtrackerError
from jobtracker.server.serve import ServeOptions
from jobtracker.server.settings import Settings
from jobtracker.store import Store, make_store
from jobtracker.store.url import parse_store_url, store_url_from

T = TypeVar("T")


def _with_store(url: str, action: Callable[[Store], Awaitable[T]]) -> T:
    async def run() -> T:
        store = make_store(url)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the HTTP API until interrupted."""
    from jobtracker.server.serve import serve

    settings = Settings(
        store_url=args.store,
        max_body_bytes=args.max_body_bytes,
        max_events=args.max_events,
        group_commit=args.group_commit,
        body_timeout=args.body_timeout,
    )
    options = ServeOptions(host=args.host, port=args.port, workers=args.workers,
                           access_log=args.access_log, header_timeout=args.header_timeout)
    return serve(settings, options)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the store's schema up to date (opening a store migrates it)."""

    async def noop(store: Store) -> None:
        return None

    _with_store(args.store, noop)
    print(f"migrated {args.store}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create a key; the secret goes alone on the last line of stdout."""
    from jobtracker.store.keys import issue_key

    issued = _with_store(args.store, lambda store: issue_key(store, args.name, args.scope))
    print(f"created {issued.record.key_id} ({issued.record.name}, scope {issued.record.scope});")
    print("the key is shown this once, store it now:")
    print(issued.secret)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    """List keys (never their secrets)."""
    keys = _with_store(args.store, lambda store: store.list_keys())
    for key in keys:
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        print(f"{key.key_id}\t{key.scope}\t{state}\t{key.created_at}\t{key.name}")
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    """Revoke a key by id; it stops working at once."""
    found = _with_store(args.store, lambda store: store.revoke_key(args.key_id))
    if not found:
        print(f"jobtracker: no key with id {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A 50-row job from PENDING to SUCCESS on a fresh SQLite file."""
    from jobtracker.cli.demo import run_demo

    run_demo()
    return 0


def _parser() -> argparse.ArgumentParser:
    store_help = "store URL (default: $JOBTRACKER_STORE, else sqlite:///jobtracker.db)"
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", help=store_help)
    parser = argparse.ArgumentParser(prog="jobtracker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", parents=[common], help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    defaults = Settings()
    serve.add_argument(
        "--max-body-bytes", type=int, default=defaults.max_body_bytes,
        help="largest request body accepted (default: %(default)s)",
    )
    serve.add_argument(
        "--max-events", type=int, default=defaults.max_events,
        help="most events in one append (default: %(default)s)",
    )
    serve.add_argument(
        "--no-group-commit", dest="group_commit", action="store_false",
        help="commit every append alone instead of grouping concurrent ones",
    )
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port (SO_REUSEPORT); default 1")
    serve.add_argument("--access-log", action="store_true",
                       help="log every request (off by default: it costs throughput)")
    serve.add_argument(
        "--header-timeout", type=float, default=ServeOptions().header_timeout,
        help="seconds a connection gets to send a request's headers, and an idle keep-alive "
             "connection stays open (default: %(default)s)",
    )
    serve.add_argument(
        "--body-timeout", type=float, default=defaults.body_timeout,
        help="seconds a client gets to send a request's body (default: %(default)s)",
    )
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", parents=[common], help="apply schema migrations")
    migrate.set_defaults(run=cmd_migrate)

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", parents=[common], help="create a key")
    create.add_argument("--name", required=True)
    create.add_argument("--scope", choices=("owner", "worker"), default="owner")
    create.set_defaults(run=cmd_keys_create)
    listing = key_commands.add_parser("list", parents=[common], help="list keys")
    listing.set_defaults(run=cmd_keys_list)
    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=cmd_keys_revoke)

    from jobtracker.cli import replay as replay_cli

    rebuild = commands.add_parser(
        "replay", parents=[common], help="rebuild or verify projections from the log"
    )
    replay_cli.add_arguments(rebuild)
    rebuild.set_defaults(run=replay_cli.cmd_replay)

    demo = commands.add_parser("demo", help="watch a job go from PENDING to SUCCESS")
    demo.set_defaults(run=cmd_demo, store=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `jobtracker` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.store = store_url_from(args.store)
    try:
        parse_store_url(args.store)
        code: int = args.run(args)
    except ConfigError as exc:
        parser.exit(2, f"jobtracker: error: {exc.detail}\n")
    except JobtrackerError as exc:
        print(f"jobtracker: {exc.detail}", file=sys.stderr)
        return 1
    return code
