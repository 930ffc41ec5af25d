"""The `responsa` command: flags and environment -> Settings -> server."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import uvicorn

from . import __version__
from .config import OPTIONS, ConfigError, Settings, load_settings
from .logs import configure as configure_logging

if TYPE_CHECKING:
    from .drain import Drain
    from .store import Store

EPILOG = """Every option can also be set with the environment variable shown in brackets, or in
the [server] table of the --config file. Precedence: command line, environment, config file,
default. Docs: docs/configuration.md."""


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        default = opt.default
        if isinstance(default, tuple):
            default = "none"
        helptext = f"{opt.help} [{opt.env}] (default: {default})"
        if opt.flag_only:
            parser.add_argument(opt.flag, dest=opt.name, action="store_true", default=None, help=helptext)
        elif opt.repeatable:
            parser.add_argument(opt.flag, dest=opt.name, action="append", metavar=opt.metavar, help=helptext)
        else:
            parser.add_argument(opt.flag, dest=opt.name, metavar=opt.metavar or opt.name.upper(), help=helptext)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="responsa", description="A self-hosted OpenAI / Azure OpenAI "
                                     "Responses API server in front of any model.")
    parser.add_argument("--version", action="version", version=f"responsa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Start the server.", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Serve the Responses API. With no upstream engine configured, every "
                           "model name is answered by the embedded SmolLM2-135M-Instruct model.")
    _add_serve_options(serve)
    migrate = sub.add_parser("migrate", help="Create or upgrade the database schema, then exit.", epilog=EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_store_options(migrate)
    keys = sub.add_parser("keys", help="Create, list, revoke and rotate API keys kept in the store.",
                          description="API keys made by the server: each is shown once and stored as a hash; "
                          "every server on the same database accepts it within seconds, without a restart. "
                          "Keys given with --api-key keep working beside them. Docs: docs/operations.md.")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="Make a key and print it (once).")
    create.add_argument("--name", required=True, help="What logs call the key (never the key itself).")
    create.add_argument("--project", help="A project: its keys share what any of them creates.")
    _add_limit_options(create)
    limit = actions.add_parser("limits", aliases=["limit"], help="Set the limits of a key, or of a project.",
                               description="Set the limits of a key (KEY_ID) or of a project (--project): the "
                               "limits given replace the ones it had (0: none). A project's limits hold for all "
                               "its keys together, beside each key's own.")
    limit.add_argument("key_id", metavar="KEY_ID", nargs="?")
    limit.add_argument("--project", help="Set this project's limits instead of a key's.")
    _add_limit_options(limit)
    listing = actions.add_parser("list", help="Every key: id, name, project, created, state (never a secret).")
    revoke = actions.add_parser("revoke", help="Stop a key from working.")
    revoke.add_argument("key_id", metavar="KEY_ID")
    rotate = actions.add_parser("rotate", help="Give a key a new secret (printed once); the old one stops "
                                "working, what the key owns stays its own.")
    rotate.add_argument("key_id", metavar="KEY_ID")
    for action in (create, listing, revoke, rotate, limit):
        _add_store_options(action)
    usage = sub.add_parser("usage", help="Usage per day, key, project and model, as stored by the servers.",
                           description="Requests, input / output / cached / reasoning tokens and errors per "
                           "day (UTC), key, project and model. Servers store their counts every "
                           "--usage-flush-interval. The same numbers: GET /v1/admin/usage with an --admin-key.")
    usage.add_argument("--since", metavar="YYYY-MM-DD", help="First day (default: today).")
    usage.add_argument("--until", metavar="YYYY-MM-DD", help="Last day (default: --since).")
    usage.add_argument("--key", metavar="KEY_ID", help="Only this key (an id, or `local`, or key-... for --api-key).")
    usage.add_argument("--project", help="Only this project.")
    _add_store_options(usage)
    return parser


LIMIT_OPTIONS = (
    ("requests_per_minute", "Most requests per minute"),
    ("tokens_per_minute", "Most tokens (input + output, as responses' usage counts them) per minute"),
    ("tokens_per_day", "Most tokens per day"),
    ("streams", "Most streamed responses at once"),
    ("background_runs", "Most background responses queued or running at once"),
)


def _add_limit_options(parser: argparse.ArgumentParser) -> None:
    for name, text in LIMIT_OPTIONS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=int, metavar="N",
                            help=f"{text}, on all servers together (429 past it; 0: none).")


def _limits(args: argparse.Namespace) -> Any:
    from .store import Limits

    return Limits(**{name: getattr(args, name) for name, _ in LIMIT_OPTIONS})


def _limits_text(limits: Any) -> str:
    given = [f"{name}={value}" for name, value in limits.__dict__.items() if value]
    return " ".join(given) or "-"


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", dest="data_dir", metavar="DIR",
                        help="Directory of the SQLite database [RESPONSA_DATA_DIR].")
    parser.add_argument("--database-url", dest="database_url", metavar="URL",
                        help="PostgreSQL URL instead of SQLite [RESPONSA_DATABASE_URL].")
    parser.add_argument("--config", dest="config", metavar="FILE", help="TOML config file [RESPONSA_CONFIG].")


def serve(settings: Settings) -> None:
    from .app import create_app

    if not settings.api_key:
        logging.getLogger("responsa").warning(
            "no --api-key given: listening on loopback %s only; every caller shares one owner", settings.host)
    # Each request allocates many short-lived containers; the default young-generation
    # threshold (700) ran a collection several times per request. A response's objects form
    # cycles and outlive one young collection while it runs: collected with the middle
    # generation every 5 young collections, not 50, they kept 15 MiB less of a streaming load
    # resident at the same rate. The objects alive after start-up are frozen out of collections
    # by the app's lifespan (gc.freeze).
    gc.set_threshold(20000, 5, 100)
    _raise_open_files_limit(settings.max_connections)  # workers inherit it
    if settings.workers > 1:
        from .workers import Supervisor, serve_worker

        sys.exit(Supervisor(settings, serve_worker).run())
    try:
        app = create_app(settings)
    except ConfigError as e:  # e.g. a backend whose engine is not installed
        print(f"responsa: {e}", file=sys.stderr)
        sys.exit(2)
    DrainingServer(uvicorn_config(app, settings, host=settings.host, port=settings.port), app.drain,
                   settings.drain_timeout).run()


def uvicorn_config(app: Any, settings: Settings, **where: Any) -> uvicorn.Config:
    """uvicorn's settings for the app, the same for a single server and each of --workers."""
    from .httpserver import guarded_protocol
    from .transport import CoalescingHttpProtocol

    # A WebSocket message is held to the size of a request body; a larger one closes the
    # connection with 1009 before it is buffered whole.
    return uvicorn.Config(app, log_level=settings.log_level, access_log=False, loop="uvloop",
                          http=guarded_protocol(settings.request_read_timeout, CoalescingHttpProtocol),
                          ws="websockets-sansio", ws_max_size=settings.max_body_size, lifespan="on",
                          timeout_graceful_shutdown=GRACE_AFTER_DRAIN, limit_concurrency=settings.max_connections,
                          log_config=None, **where)


def _raise_open_files_limit(connections: int) -> None:
    """Lift the soft open-files limit towards the hard one if it is lower. A stream holds two
    descriptors (the client's connection and the one to its engine), so a process full of
    streams needs twice its connections; one descriptor each left 10,000 streams failing
    from about 5,100 on (benchmarks/many_streams.py)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * connections + 256  # + the database, MCP servers, logs
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            logging.getLogger("responsa").warning(
                "the open files limit (%d) is below the %d that --max-connections %d needs (two per stream: "
                "the client's and the engine's): raise it (ulimit -n)", new, wanted, connections)


GRACE_AFTER_DRAIN = 5  # seconds uvicorn waits for connections once the drain is over


class DrainingServer(uvicorn.Server):
    """uvicorn's server, whose stop (SIGTERM, SIGINT) first drains: no new connections, then
    streams, background runs and requests in flight get up to `drain_timeout` seconds to end
    (see drain.py) before uvicorn closes what is left and the lifespan shuts the app down."""

    def __init__(self, config: uvicorn.Config, drain: Drain, drain_timeout: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_timeout = drain_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if not self.force_exit:
            deadline = time.monotonic() + self.drain_timeout
            logging.getLogger("responsa").info("stopping: no new connections; draining for up to %ss",
                                               self.drain_timeout)
            for server in self.servers:
                server.close()  # stop accepting: the load balancer sends new requests elsewhere
            for connection in list(self.server_state.connections):
                connection.shutdown()  # idle keep-alive connections close; busy ones after their answer
            await self.drain.begin()
            if not await self.drain.wait(deadline, lambda: bool(self.server_state.connections) and
                                         not self.force_exit):
                await self.drain.interrupt()
        await super().shutdown(sockets)


def migrate(settings: Settings) -> None:
    from .store import open_store

    async def run() -> None:
        store = open_store(settings.database_url, settings.data_dir)
        await store.open()  # opening applies pending migrations
        await store.close()

    try:
        asyncio.run(run())
    except Exception as e:  # unreachable database, newer schema: one clear line, no traceback
        print(f"responsa: migration failed: {e}", file=sys.stderr)
        sys.exit(1)
    target = settings.database_url.split("@")[-1] if settings.database_url else settings.data_dir
    print(f"schema up to date ({target})")


def _on_store(settings: Settings, command: Callable[[Store], Awaitable[int]]) -> None:
    """Run a command on the store, opened beside any running server (`guest`), and exit with its
    status."""
    from .store import open_store

    async def run() -> int:
        store = open_store(settings.database_url, settings.data_dir, pool_size=2, guest=True)
        try:
            await store.open()
        except Exception as e:
            print(f"responsa: cannot open the store: {e}", file=sys.stderr)
            return 1
        try:
            return await command(store)
        finally:
            await store.close()

    status = asyncio.run(run())
    if status:
        sys.exit(status)


def keys_command(settings: Settings, args: argparse.Namespace) -> None:
    from . import keys

    async def run(store: Store) -> int:
        try:
            if args.action == "create":
                secret, record = await keys.create(store, args.name, args.project, _limits(args))
                print(f"{secret}\n\nid: {record.id}  name: {record.name}" +
                      (f"  project: {record.project}" if record.project else ""))
                print("This key is shown once and only its hash is kept: store it now.", file=sys.stderr)
            elif args.action == "list":
                print("\t".join(("id", "name", "project", "created", "state", "limits")))
                for k in await store.list_keys():
                    state = "revoked" if k.revoked_at else "rotated" if k.rotated_at else "active"
                    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k.created_at))
                    print("\t".join((k.id, k.name, k.project or "-", created, state, _limits_text(k.limits))))
                for project, limits in (await store.get_project_limits()).items():
                    print("\t".join(("-", "-", project, "-", "project", _limits_text(limits))))
            elif args.action in ("limits", "limit"):
                if (args.key_id is None) == (args.project is None):
                    print("responsa: give either KEY_ID or --project", file=sys.stderr)
                    return 2
                if args.project is not None:
                    await keys.set_project_limits(store, args.project, _limits(args))
                    print(f"project {args.project}: {_limits_text(_limits(args))}")
                elif not await keys.set_limits(store, args.key_id, _limits(args)):
                    print(f"responsa: no key in use with id {args.key_id}", file=sys.stderr)
                    return 1
                else:
                    print(f"{args.key_id}: {_limits_text(_limits(args))}")
            elif args.action == "revoke":
                if not await keys.revoke(store, args.key_id):
                    print(f"responsa: no key in use with id {args.key_id}", file=sys.stderr)
                    return 1
                print(f"revoked {args.key_id}")
            elif args.action == "rotate":
                rotated = await keys.rotate(store, args.key_id)
                if rotated is None:
                    print(f"responsa: no key in use with id {args.key_id}", file=sys.stderr)
                    return 1
                print(f"{rotated}\n\nid: {args.key_id} (the previous secret no longer works)")
                print("This key is shown once and only its hash is kept: store it now.", file=sys.stderr)
        except keys.InvalidKeyArgument as e:
            print(f"responsa: {e}", file=sys.stderr)
            return 2
        return 0

    _on_store(settings, run)


def usage_command(settings: Settings, args: argparse.Namespace) -> None:
    from .store import UsageRow
    from .usage import today

    async def run(store: Store) -> int:
        since = args.since or today()
        rows = await store.list_usage(since=since, until=args.until or since, key=args.key, project=args.project)
        print("\t".join(("day", "key", "project", "model", *UsageRow.COUNTS)))
        for r in rows:
            print("\t".join((r.day, r.key, r.project or "-", r.model, *(str(getattr(r, c)) for c in UsageRow.COUNTS))))
        return 0

    _on_store(settings, run)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k in {o.name for o in OPTIONS}}
    try:
        if args.command in ("migrate", "keys", "usage"):
            # migrate listens on nothing: a RESPONSA_HOST meant for `serve` (whose keys may come as
            # flags) must not trip the loopback-only rule
            values["host"] = "127.0.0.1"
            settings = load_settings(values)
        else:
            settings = load_settings(values)
    except ConfigError as e:
        print(f"responsa: {e}", file=sys.stderr)
        sys.exit(2)
    configure_logging(settings.log_level, settings.log_format)
    if args.command == "serve":
        serve(settings)
    elif args.command == "migrate":
        migrate(settings)
    elif args.command == "keys":
        keys_command(settings, args)
    elif args.command == "usage":
        usage_command(settings, args)


if __name__ == "__main__":
    main()
