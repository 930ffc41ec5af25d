"""The `responsa` command: flags and environment -> Settings -> server."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from collections.abc import Sequence

from . import __version__
from .config import OPTIONS, ConfigError, Settings, load_settings

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
    migrate.add_argument("--data-dir", dest="data_dir", metavar="DIR",
                         help="Directory of the SQLite database [RESPONSA_DATA_DIR].")
    migrate.add_argument("--database-url", dest="database_url", metavar="URL",
                         help="PostgreSQL URL instead of SQLite [RESPONSA_DATABASE_URL].")
    migrate.add_argument("--config", dest="config", metavar="FILE", help="TOML config file [RESPONSA_CONFIG].")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", stream=sys.stderr)


def serve(settings: Settings) -> None:
    import uvicorn

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
    if settings.workers > 1:
        from .workers import Supervisor, serve_worker

        sys.exit(Supervisor(settings, serve_worker).run())
    try:
        app = create_app(settings)
    except ConfigError as e:  # e.g. a backend whose engine is not installed
        print(f"responsa: {e}", file=sys.stderr)
        sys.exit(2)
    from .transport import CoalescingHttpProtocol

    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, access_log=False,
                loop="uvloop", http=CoalescingHttpProtocol, lifespan="on", timeout_graceful_shutdown=10,
                log_config=None)


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


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        if args.command == "migrate":
            # migrate listens on nothing: a RESPONSA_HOST meant for `serve` (whose keys may come as
            # flags) must not trip the loopback-only rule
            values["host"] = "127.0.0.1"
            settings = load_settings(values)
        else:
            settings = load_settings(values)
    except ConfigError as e:
        print(f"responsa: {e}", file=sys.stderr)
        sys.exit(2)
    _configure_logging(settings.log_level)
    if args.command == "serve":
        serve(settings)
    elif args.command == "migrate":
        migrate(settings)


if __name__ == "__main__":
    main()
