"""The `jobtracker` command: serve, migrate, keys, jobs, watch, replay, demo.

Errors are one line on stderr: exit 2 when the command could not run (a bad flag or setting, a
store or server out of reach, a refused key), 1 when it ran and the answer is no (an unknown key
id, a log that does not replay, `replay --verify` finding a difference, `watch` seeing FAILURE).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib import metadata
from typing import TypeVar

from jobtracker.cli.jobs import add_jobs_commands
from jobtracker.cli.retention import add_prune_command
from jobtracker.cli.stats import add_stats_command
from jobtracker.cli.table import print_table
from jobtracker.cli.watch import add_watch_command
from jobtracker.cli.webhooks import add_webhook_arguments, add_webhooks_command, webhook_settings
from jobtracker.domain.errors import ConfigError, InvalidInput, JobtrackerError, StoreUnavailable
from jobtracker.server.config import DefaultsHelpFormatter, HelpFormatter, apply_env_defaults
from jobtracker.server.logs import LOG_FORMATS
from jobtracker.server.serve import ServeOptions
from jobtracker.server.settings import Settings
from jobtracker.store import Store, make_store
from jobtracker.store.base import ApiKey
from jobtracker.store.url import masked, parse_store_url, store_url_from

#: Exit status of a command that could not run (usage, settings, a store or server out of reach).
FAILED = 2

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
        read_url=args.read_url,
        max_body_bytes=args.max_body_bytes,
        max_events=args.max_events,
        group_commit=args.group_commit,
        body_timeout=args.body_timeout,
        heartbeat_timeout=args.heartbeat_timeout,
        cancel_grace=args.cancel_grace,
        metrics=args.metrics,
        metrics_port=args.metrics_port,
        retention=args.retention,
        **webhook_settings(args),
    )
    options = ServeOptions(host=args.host, port=args.port, workers=args.workers,
                           access_log=args.access_log, header_timeout=args.header_timeout,
                           log_format=args.log_format, shutdown_timeout=args.shutdown_timeout,
                           forwarded_allow_ips=args.forwarded_allow_ips)
    return serve(settings, options)


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the store's schema up to date (opening a store migrates it)."""

    async def noop(store: Store) -> None:
        return None

    _with_store(args.store, noop)
    print(f"migrated {masked(args.store)}")
    return 0


def cmd_keys_create(args: argparse.Namespace) -> int:
    """Create a key; the secret goes alone on the last line of stdout."""
    from jobtracker.store.keys import issue_key

    problem = _binding_problem(args.scope, args.owners, args.all_owners)
    if problem is not None:
        return _usage_error(problem)
    try:
        issued = _with_store(args.store, lambda store: issue_key(
            store, args.name, args.scope, owners=args.owners, all_owners=args.all_owners))
    except InvalidInput as exc:
        return _usage_error(exc.detail)
    record = issued.record
    scope = f"{record.scope} for {_binding(record)}" if record.scope == "worker" else record.scope
    print(f"created {record.key_id} ({record.name}, scope {scope})")
    print(f"in the store {_where(args.store)}: serve this store for the key to work")
    print("the key is shown this once, store it now:")
    print(issued.secret)
    return 0


def _where(url: str) -> str:
    """The store URL as printed, and for a SQLite file its absolute path."""
    parsed = parse_store_url(url)
    if parsed.kind == "sqlite":
        return f"{url} ({os.path.abspath(parsed.location)})"
    return masked(url)


def _binding_problem(scope: str, owners: list[str], all_owners: bool) -> str | None:
    if scope != "worker" and (owners or all_owners):
        return "--owner and --all-owners are for worker keys (--scope worker) only"
    if scope == "worker" and not owners and not all_owners:
        return "a worker key needs --owner KEY_ID (repeatable) or --all-owners"
    if owners and all_owners:
        return "--owner and --all-owners exclude each other"
    return None


def _retention(text: str) -> int:
    """`--retention`'s seconds; argparse turns the error into a usage line and exit 2."""
    from jobtracker.domain.retention import parse_duration

    try:
        return parse_duration("--retention", text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.detail) from None


def _usage_error(message: str) -> int:
    print(f"jobtracker: error: {message}", file=sys.stderr)
    return FAILED


def _binding(key: ApiKey) -> str:
    """The jobs a key may act on besides its own: a worker key's owners, or all owners."""
    if key.scope != "worker":
        return "-"
    return "all owners" if key.all_owners else ",".join(key.owners) or "no owners"


#: The columns of `keys list`.
KEY_COLUMNS = ("ID", "SCOPE", "STATE", "CREATED", "BINDING", "NAME")


def cmd_keys_list(args: argparse.Namespace) -> int:
    """List keys (never their secrets), with each worker key's binding: a table with a header,
    aligned on a terminal and tab-separated otherwise (for `cut -f` and friends)."""
    keys = _with_store(args.store, lambda store: store.list_keys())
    if not keys:
        print(f"no keys in {_where(args.store)}; make one with "
              "`jobtracker keys create --name NAME`", file=sys.stderr)
        return 0
    rows = [KEY_COLUMNS]
    for key in keys:
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        rows.append((key.key_id, key.scope, state, key.created_at, _binding(key), key.name))
    print_table(rows)
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


def _parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The command line; `environ` gives the flags of `serve` and `webhooks run` their
    JOBTRACKER_* defaults."""
    store_help = ("store URL: sqlite:///relative.db, sqlite:////absolute.db, memory:// or "
                  "postgresql://… (default: $JOBTRACKER_STORE, else sqlite:///jobtracker.db in "
                  "the current directory)")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store", metavar="URL", help=store_help)
    parser = argparse.ArgumentParser(prog="jobtracker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    formatter = DefaultsHelpFormatter

    serve = commands.add_parser("serve", parents=[common], help="run the HTTP API",
                                formatter_class=HelpFormatter)
    options = ServeOptions()
    serve.add_argument("--host", default=options.host, help="address to listen on")
    serve.add_argument("--port", type=int, default=options.port, help="port to listen on")
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
        "--group-commit", action=argparse.BooleanOptionalAction, default=defaults.group_commit,
        help="commit concurrent appends together; --no-group-commit commits each alone",
    )
    serve.add_argument("--workers", type=int, default=1,
                       help="server processes sharing the port (SO_REUSEPORT)")
    serve.add_argument("--read-url", metavar="URL", default=defaults.read_url,
                       help="a PostgreSQL standby of the store that GET /api/v1/jobs/{id} reads "
                            "from; ?min_version=N keeps read-your-writes (default: the store)")
    serve.add_argument("--access-log", action=argparse.BooleanOptionalAction,
                       default=options.access_log,
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
    serve.add_argument(
        "--heartbeat-timeout", type=int, default=defaults.heartbeat_timeout,
        help="seconds a running job may go without an event or a heartbeat before it is failed "
             "as worker_lost, for jobs created without their own (default: %(default)s)",
    )
    serve.add_argument(
        "--cancel-grace", type=float, default=defaults.cancel_grace,
        help="seconds a running job asked to cancel has to stop before the server fails it "
             "(default: %(default)s)",
    )
    serve.add_argument(
        "--retention", metavar="DURATION", type=_retention,
        help="prune jobs finished longer ago than this (30d, 12h; at least 1m) in the "
             "background, in small batches (default: off, keep every job)",
    )
    _operations_arguments(serve, options, defaults)
    add_webhook_arguments(serve, switch=True)
    if environ is not None:
        apply_env_defaults(serve, environ)
    serve.set_defaults(run=cmd_serve)

    migrate = commands.add_parser("migrate", parents=[common], help="apply schema migrations",
                                  formatter_class=formatter)
    migrate.set_defaults(run=cmd_migrate)

    _add_keys_commands(commands, common, formatter)
    add_webhooks_command(commands, common, environ)
    add_jobs_commands(commands, formatter)
    add_prune_command(commands, common, formatter)
    add_stats_command(commands, common, formatter)
    add_watch_command(commands, formatter)

    from jobtracker.cli import replay as replay_cli

    rebuild = commands.add_parser(
        "replay", parents=[common], help="rebuild or verify projections from the log",
        formatter_class=formatter,
    )
    replay_cli.add_arguments(rebuild)
    rebuild.set_defaults(run=replay_cli.cmd_replay)

    demo = commands.add_parser("demo", help="watch a job go from PENDING to SUCCESS",
                               formatter_class=formatter)
    demo.set_defaults(run=cmd_demo, store=None)
    return parser


def _add_keys_commands(
    commands: argparse._SubParsersAction,  # type: ignore[type-arg]
    common: argparse.ArgumentParser,
    formatter: type[argparse.HelpFormatter],
) -> None:
    """`keys create`, `keys list`, `keys revoke`."""
    keys = commands.add_parser("keys", help="create, list and revoke API keys",
                               formatter_class=formatter)
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", parents=[common], help="create a key",
                                     formatter_class=formatter)
    create.add_argument("--name", required=True,
                        help="what the key is for, shown by `keys list` (required)")
    create.add_argument("--scope", choices=("owner", "worker"), default="owner",
                        help="owner: creates and reads its jobs; worker: reports on its owners' "
                             "jobs")
    create.add_argument(
        "--owner", dest="owners", action="append", default=[], metavar="KEY_ID",
        help="a worker key acts only on the jobs of this owner key (repeatable) (default: none)",
    )
    create.add_argument(
        "--all-owners", action="store_true",
        help="a worker key acts on every owner's jobs: a platform-internal credential",
    )
    create.set_defaults(run=cmd_keys_create)
    listing = key_commands.add_parser("list", parents=[common], help="list keys",
                                      formatter_class=formatter)
    listing.set_defaults(run=cmd_keys_list)
    revoke = key_commands.add_parser("revoke", parents=[common], help="revoke a key",
                                     formatter_class=formatter)
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id, as `keys list` shows it")
    revoke.set_defaults(run=cmd_keys_revoke)


def _operations_arguments(
    serve: argparse.ArgumentParser, options: ServeOptions, defaults: Settings
) -> None:
    """`serve`'s flags for running it in production: logs, metrics, shutdown, proxies."""
    serve.add_argument("--log-format", choices=LOG_FORMATS, default=options.log_format,
                       help="log lines as text, or as one JSON object per line")
    serve.add_argument("--metrics", action=argparse.BooleanOptionalAction,
                       default=defaults.metrics,
                       help="count requests for Prometheus and serve GET /metrics")
    serve.add_argument("--metrics-port", type=int, default=defaults.metrics_port,
                       help="serve /metrics on this port instead of the API's (not exposed with "
                            "the API) (default: the API's port)")
    serve.add_argument("--shutdown-timeout", type=float, default=options.shutdown_timeout,
                       help="seconds from SIGTERM/SIGINT to exit; requests under way finish "
                            "within it")
    serve.add_argument("--forwarded-allow-ips", default=options.forwarded_allow_ips,
                       help="proxies (addresses or networks, comma-separated, or *) whose "
                            "X-Forwarded-For the access log believes")


def _version() -> str:
    try:
        return metadata.version("jobtracker")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        import jobtracker

        return f"{jobtracker.__version__} (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `jobtracker` console script."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    try:
        # Only `serve` and `webhooks run` read their JOBTRACKER_* flags: a bad one must not
        # break `keys list`.
        reads_env = arguments[:1] == ["serve"] or arguments[:2] == ["webhooks", "run"]
        parser = _parser(os.environ if reads_env else None)
    except ConfigError as exc:
        print(f"jobtracker: error: {exc.detail}", file=sys.stderr)
        return 2
    args = parser.parse_args(arguments)
    args.store = store_url_from(args.store)
    try:
        parse_store_url(args.store)
        code: int = args.run(args)
    except (ConfigError, StoreUnavailable) as exc:
        return _usage_error(exc.detail)
    except JobtrackerError as exc:
        print(f"jobtracker: {exc.detail}", file=sys.stderr)
        return 1
    except OSError as exc:  # a file or socket the command needed: say which, not a traceback
        return _usage_error(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        return 130
    return code
