"""Settings: the only module that reads the environment and the config file.

Every `responsa serve` option is declared once: its flag, help and parser in `OPTIONS`, its
type and default as a `Settings` field. The CLI builds its parser from `OPTIONS`, each option
can also come from `RESPONSA_<NAME>` or the `[server]` table of the TOML config file, and a
test checks that each one is documented. Precedence: command line, then environment, then
config file, then the default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .netguard import parse_network

DAY = 86400


class ConfigError(Exception):
    """A setting is missing, malformed or inconsistent; the CLI prints it and exits 2."""


def parse_duration(text: str | int | float) -> int:
    """Seconds from `90`, `90s`, `15m`, `12h`, `30d`."""
    if isinstance(text, int | float):
        return int(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise ConfigError(f"invalid duration {text!r} (use e.g. 3600, 90s, 15m, 12h, 30d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": DAY}[m.group(2)]
    return int(float(m.group(1)) * unit)


def parse_size(text: str | int) -> int:
    """Bytes from `1048576`, `512k`, `64m`, `1g`."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+)\s*([kmgKMG]?)[bB]?\s*", str(text))
    if not m:
        raise ConfigError(f"invalid size {text!r} (use e.g. 1048576, 512k, 64m, 1g)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"invalid boolean {text!r}")


def parse_reasoning_key(text: str) -> str:
    """A reasoning encryption key: any string of at least 32 characters (it is stretched with HKDF)."""
    if len(text) < 32:
        raise ValueError("a reasoning key needs at least 32 characters (try `openssl rand -base64 32`)")
    return text


def parse_api_key(text: str) -> str:
    """A client API key: an empty one would let in every request that sends an empty key."""
    if not isinstance(text, str):
        raise TypeError(f"expected a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("an API key must not be empty or blank (is the variable it comes from unset?)")
    if text != text.strip():
        raise ValueError("an API key must not start or end with whitespace (HTTP headers drop it, so no "
                         "client could send it)")
    return text


def parse_log_format(text: str) -> str:
    if text not in ("text", "json"):
        raise ValueError(f"{text!r} is not a log format (use text or json)")
    return text


def parse_port(text: str | int) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"{port} is not a TCP port (1-65535)")
    return port


def parse_web_search_provider(text: str) -> str:
    if text not in ("searxng", "brave"):
        raise ValueError(f"{text!r} is not a web search provider (use searxng or brave)")
    return text


def parse_stream_dialect(text: str) -> str:
    if text not in ("openai", "open-responses"):
        raise ValueError(f"{text!r} is not a stream dialect (use openai or open-responses)")
    return text


def default_data_dir(environ: Mapping[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "responsa")


@dataclass(frozen=True)
class Option:
    """One `responsa serve` setting: flag, environment variable and config-file key."""

    name: str  # python name; flag is --name-with-dashes, env is RESPONSA_NAME
    help: str
    parse: Callable[[Any], Any] = str
    repeatable: bool = False
    flag_only: bool = False  # a switch (store_true) on the command line
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "RESPONSA_" + self.name.upper()

    @property
    def default(self) -> Any:
        """The value when nothing sets it: the `Settings` field's (None where it is computed)."""
        default = _SETTINGS_FIELDS[self.name].default
        return None if default is MISSING else default


OPTIONS: tuple[Option, ...] = (
    Option("host", "Interface to listen on. Without --api-key only a loopback host is allowed."),
    Option("port", "TCP port to listen on.", int),
    Option("workers", "Server processes sharing the port and the database: one per core to use.", int,
           metavar="N"),
    Option("data_dir", "Directory for the SQLite database, uploaded files and the reasoning encryption key.",
           metavar="DIR"),
    Option("database_url", "Database to use instead of SQLite in --data-dir: postgresql://user@host/db.",
           metavar="URL"),
    Option("database_pool_size", "Most PostgreSQL connections one process opens (plus one for notifications).",
           int, metavar="N"),
    Option("lease_duration", "How long a background run's lease lasts unless renewed; a replica that dies is "
           "detected this long after its last renewal.", parse_duration, metavar="DURATION"),
    Option("config", "TOML file mapping model / deployment names to backends (see docs/configuration.md).",
           metavar="FILE"),
    Option("upstream_base_url", "OpenAI-compatible Chat Completions engine that serves every model name "
           "(for example http://127.0.0.1:8000/v1).", metavar="URL"),
    Option("upstream_api_key", "API key sent to the upstream engine as `Authorization: Bearer`.", metavar="KEY"),
    Option("upstream_timeout", "Longest wait for the upstream engine, per turn and between streamed chunks.",
           parse_duration, metavar="DURATION"),
    Option("model_file", "Serve a GGUF file with the embedded engine under a model name (repeatable).",
           repeatable=True, metavar="NAME=PATH"),
    Option("embedded_queue", "Requests that may wait for a busy embedded model; more get a 429.", int,
           metavar="N"),
    Option("embedded_threads", "CPU threads each embedded model uses (0: half the logical cores).", int,
           metavar="N"),
    Option("api_key", "A key clients must send as `Authorization: Bearer KEY` or `api-key: KEY` (repeatable; "
           "RESPONSA_API_KEY takes a comma-separated list). Each key owns what it creates. An empty or blank "
           "key is refused.", parse_api_key, repeatable=True, metavar="KEY"),
    Option("admin_key", "Key for the admin views and endpoints: GET /responses lists every owner's responses with "
           "it, the console shows and cancels any of them, and GET /v1/admin/usage reads usage (other keys get "
           "403 there). It is no API key for anything else. Repeat for several (RESPONSA_ADMIN_KEY takes a "
           "comma-separated list). Off unless set.", parse_api_key, repeatable=True, metavar="KEY"),
    Option("console", "Serve the web console at /console: true or false (default: true on a loopback --host, "
           "false elsewhere).", parse_bool, metavar="BOOL"),
    Option("allow_private_network", "Let server-side fetches (MCP servers, image and file URLs) reach "
           "private, loopback and link-local addresses.", parse_bool, flag_only=True),
    Option("allow_private_address", "Let server-side fetches reach this private address or CIDR network only "
           "(repeatable; RESPONSA_ALLOW_PRIVATE_ADDRESS takes a comma-separated list).", parse_network,
           repeatable=True, metavar="CIDR"),
    Option("mcp_timeout", "Longest an MCP server may take to list its tools or to run one tool call "
           "(connecting included).", parse_duration, metavar="DURATION"),
    Option("mcp_max_output", "Largest MCP tool output kept; longer output is cut, with a note saying so.",
           parse_size, metavar="SIZE"),
    Option("retention", "How long stored responses, their items and events are kept.", parse_duration,
           metavar="DURATION"),
    Option("max_body_size", "Largest accepted JSON request body.", parse_size, metavar="SIZE"),
    Option("max_file_size", "Largest file: uploads to /files (413 above it), and image or file URLs the "
           "server downloads.", parse_size, metavar="SIZE"),
    Option("fetch_image_urls", "Download http(s) image URLs and send them to the engine inline (behind the "
           "private-network guard) instead of passing the URL for the engine to fetch.", parse_bool,
           flag_only=True),
    Option("unstored_background_window", "How long a background response created with store=false stays "
           "readable (retrieve, stream resume) after it ends; then it is removed.", parse_duration,
           metavar="DURATION"),
    Option("max_background_runs", "Background runs executed at once per process; more wait as `queued`.",
           int, metavar="N"),
    Option("request_read_timeout", "Longest a request may take to arrive, headers and body, from its first "
           "byte (408 and the connection closed after it); a connection that sends nothing is closed after "
           "5 s.", parse_duration, metavar="DURATION"),
    Option("max_connections", "Open connections (streams included) one process serves at once; past it new "
           "requests get a 503.", int, metavar="N"),
    Option("keepalive_interval", "Seconds of stream silence after which an SSE comment is sent.",
           parse_duration, metavar="DURATION"),
    Option("websocket_idle_timeout", "How long a WebSocket connection to /responses may stay idle (no client "
           "event, no response running) before the server closes it.", parse_duration, metavar="DURATION"),
    Option("log_level", "Log level: debug, info, warning or error."),
    Option("access_log", "Log one line per request.", parse_bool),
    Option("log_format", "Log lines as `text` or as `json` objects (one per line, with the request id, key "
           "name, model, status, tokens and durations on access lines).", parse_log_format, metavar="FORMAT"),
    Option("metrics_port", "Serve Prometheus metrics at GET /metrics on this port, apart from the API (off "
           "unless set).", parse_port, metavar="PORT"),
    Option("metrics_host", "Interface the --metrics-port listener binds (default: --host).", metavar="HOST"),
    Option("traces", "Export OpenTelemetry traces over OTLP/HTTP (needs the `otel` extra), set up by the "
           "standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...). Default: on when "
           "OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set (and OTEL_SDK_DISABLED is "
           "not true), else off.", parse_bool),
    Option("usage_flush_interval", "How often each server adds the usage it counted to the store (usage per "
           "key, model and day).", parse_duration, metavar="DURATION"),
    Option("limit_minute", "The window of per-minute key limits (requests and tokens per minute); shorten it "
           "only to test limits.", parse_duration, metavar="DURATION"),
    Option("limit_day", "The window of per-day key limits (tokens per day); shorten it only to test limits.",
           parse_duration, metavar="DURATION"),
    Option("drain_timeout", "On SIGTERM, how long streams and background runs may go on finishing before the "
           "server ends them and exits.", parse_duration, metavar="DURATION"),
    Option("reasoning_key", "Key (32+ characters, e.g. `openssl rand -base64 32`) for encrypted reasoning "
           "(`include: reasoning.encrypted_content`). Repeat to rotate: the first encrypts, all decrypt "
           "(RESPONSA_REASONING_KEY takes a comma-separated list). Default: a key kept in the database.",
           parse_reasoning_key, repeatable=True, metavar="KEY"),
    Option("stream_dialect", "Names of raw reasoning stream events: `openai` (response.reasoning_text.*, as "
           "the SDKs expect) or `open-responses` (response.reasoning.*).", parse_stream_dialect,
           metavar="DIALECT"),
    Option("images_base_url", "OpenAI-compatible Images API for the image_generation tool (default: the "
           "--upstream-base-url engine).", metavar="URL"),
    Option("images_api_key", "API key for --images-base-url (default: --upstream-api-key when the Images API "
           "is the upstream engine).", metavar="KEY"),
    Option("images_model", "Image model used when neither the tool's `model` nor the "
           "x-ms-oai-image-generation-deployment header names one.", metavar="NAME"),
    Option("web_search_provider", "Run the web_search tool with this provider: `searxng` (a SearXNG instance's "
           "JSON API, at --web-search-url) or `brave` (the Brave Search API, with --web-search-api-key). Unset: "
           "web_search tools are accepted and ignored.", parse_web_search_provider, metavar="PROVIDER"),
    Option("web_search_url", "The provider's address: the SearXNG instance (for example http://127.0.0.1:8888); "
           "for brave, default https://api.search.brave.com.", metavar="URL"),
    Option("web_search_api_key", "The provider's key: Brave's subscription token (for SearXNG, sent as a bearer "
           "token if set).", metavar="KEY"),
    Option("embeddings_base_url", "OpenAI-compatible /embeddings API for file_search (vLLM, llama.cpp, Ollama, "
           "TEI, OpenAI). Default: the embedded all-MiniLM-L6-v2 when installed, else full-text search only.",
           metavar="URL"),
    Option("embeddings_api_key", "API key for --embeddings-base-url.", metavar="KEY"),
    Option("embeddings_model", "Embedding model name sent to --embeddings-base-url.", metavar="NAME"),
    Option("vector_cache_size", "Memory each process keeps for file_search's dense vectors (stores searched "
           "least recently go first; a larger store is read for each query).", parse_size, metavar="SIZE"),
)

OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Every setting, typed; the field defaults are the options' defaults (`Option.default`)."""

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: str = field(default_factory=default_data_dir)
    database_url: str | None = None
    database_pool_size: int = 10
    lease_duration: int = 30
    upstream_base_url: str | None = None
    upstream_api_key: str | None = None
    upstream_timeout: int = 600
    model_file: tuple[str, ...] = ()
    embedded_queue: int = 16
    embedded_threads: int = 0
    api_key: tuple[str, ...] = ()
    admin_key: tuple[str, ...] = ()
    console: bool | None = None  # None: on when the host is a loopback one
    allow_private_network: bool = False
    allow_private_address: tuple[str, ...] = ()
    mcp_timeout: int = 60
    mcp_max_output: int = 256 * 1024
    retention: int = 30 * DAY
    max_body_size: int = 64 * 1024**2
    max_file_size: int = 64 * 1024**2
    fetch_image_urls: bool = False
    max_background_runs: int = 32
    request_read_timeout: int = 120
    max_connections: int = 10_000
    unstored_background_window: int = 600
    keepalive_interval: int = 15
    websocket_idle_timeout: int = 600
    log_level: str = "info"
    access_log: bool = True
    log_format: str = "text"
    metrics_port: int | None = None
    metrics_host: str | None = None
    traces: bool = False  # unless set, decided by the OTEL_* variables (load_settings)
    usage_flush_interval: int = 5
    limit_minute: int = 60
    limit_day: int = DAY
    drain_timeout: int = 25
    reasoning_key: tuple[str, ...] = ()
    stream_dialect: str = "openai"
    images_base_url: str | None = None
    images_api_key: str | None = None
    images_model: str = "gpt-image-1.5"
    web_search_provider: str | None = None
    web_search_url: str | None = None
    web_search_api_key: str | None = None
    embeddings_base_url: str | None = None
    embeddings_api_key: str | None = None
    embeddings_model: str = "text-embedding-3-small"
    vector_cache_size: int = 512 * 1024**2
    config: str | None = None
    backends: tuple[BackendConfig, ...] = ()
    routes: Mapping[str, Route] = field(default_factory=dict)
    default_route: Route | None = None

    @property
    def console_on(self) -> bool:
        return self.is_loopback_host if self.console is None else self.console

    @property
    def is_loopback_host(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


_SETTINGS_FIELDS = {f.name: f for f in fields(Settings)}


@dataclass(frozen=True)
class BackendConfig:
    """One engine from the config file, or made from the command line."""

    name: str
    kind: str  # "chat_completions" | "embedded" | "scripted"
    base_url: str | None = None
    api_key: str | None = None
    auth: str = "bearer"  # or "api-key" (Azure)
    timeout: int = Settings.upstream_timeout
    # How reasoning items go back: drop | reasoning_content | reasoning; None: by the engine's
    # address (chat_completions.default_reasoning_input).
    reasoning_input: str | None = None
    model_file: str | None = None
    context_window: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    """A model name clients use, the backend that serves it, and the engine's own name for it."""

    backend: str
    model: str | None = None  # None: pass the client's name through


def _parse_option(opt: Option, raw: Any, source: str) -> Any:
    try:
        if opt.repeatable:
            if isinstance(raw, str):
                raw = [p.strip() for p in raw.split(",") if p.strip()]
            return tuple(opt.parse(v) for v in raw)
        return opt.parse(raw)
    except (ValueError, TypeError, ConfigError) as e:
        raise ConfigError(f"{source}: invalid value for {opt.flag}: {e}") from e


def load_settings(cli: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Merge command line, environment and config file into Settings, and check them."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = cli.get("config") or environ.get("RESPONSA_CONFIG")
    file_data: dict[str, Any] = {}
    if config_path:
        try:
            with open(config_path, "rb") as f:
                file_data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config file {config_path}: {e}") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {config_path}: {e}") from e
    server = file_data.get("server", {})
    unknown = set(server) - set(OPTIONS_BY_NAME)
    if unknown:
        raise ConfigError(f"{config_path} [server]: unknown keys {sorted(unknown)}")
    for opt in OPTIONS:
        raw = cli.get(opt.name)
        if raw is not None and raw != () and raw is not False:
            values[opt.name] = _parse_option(opt, raw, "command line")
        elif opt.env in environ:
            values[opt.name] = _parse_option(opt, environ[opt.env], opt.env)
        elif opt.name in server:
            values[opt.name] = _parse_option(opt, server[opt.name], f"{config_path} [server]")
        elif opt.default is not None:
            values[opt.name] = opt.default
    if not values.get("data_dir"):
        values["data_dir"] = default_data_dir(environ)
    values["config"] = config_path
    if cli.get("traces") is None and "RESPONSA_TRACES" not in environ and "traces" not in server:
        # the standard variables turn traces on, as for any OpenTelemetry SDK user
        values["traces"] = bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) \
            and environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true" \
            and environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() != "none"
    backends, routes, default_route = _backends_and_routes(values, file_data, config_path, environ)
    settings = Settings(**values, backends=backends, routes=routes, default_route=default_route)
    check(settings)
    return settings


def _backends_and_routes(
    values: Mapping[str, Any], file_data: Mapping[str, Any], path: str | None, environ: Mapping[str, str]
) -> tuple[tuple[BackendConfig, ...], dict[str, Route], Route | None]:
    backends: dict[str, BackendConfig] = {}
    routes: dict[str, Route] = {}
    default_route: Route | None = None
    timeout = values["upstream_timeout"]
    for name, spec in (file_data.get("backends") or {}).items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: [backends.{name}] must be a table")
        spec = dict(spec)
        kind = spec.pop("kind", "chat_completions")
        if kind not in ("chat_completions", "embedded", "scripted"):
            raise ConfigError(f"{path}: [backends.{name}] kind must be chat_completions, embedded or scripted")
        api_key = spec.pop("api_key", None)
        key_env = spec.pop("api_key_env", None)
        if key_env:
            api_key = environ.get(key_env)
            if api_key is None:
                raise ConfigError(f"{path}: [backends.{name}] api_key_env {key_env} is not set")
        known = {"base_url", "auth", "timeout", "reasoning_input", "model_file", "context_window"}
        fields = {k: spec.pop(k) for k in list(spec) if k in known}
        if "timeout" in fields:
            try:
                fields["timeout"] = parse_duration(fields["timeout"])
            except ConfigError as e:
                raise ConfigError(f"{path}: [backends.{name}] timeout: {e}") from e
        else:
            fields["timeout"] = timeout
        if kind == "chat_completions" and not fields.get("base_url"):
            raise ConfigError(f"{path}: [backends.{name}] needs base_url")
        if kind == "embedded" and not fields.get("model_file"):
            raise ConfigError(f"{path}: [backends.{name}] needs model_file")
        if fields.get("auth", "bearer") not in ("bearer", "api-key"):
            raise ConfigError(f"{path}: [backends.{name}] auth must be 'bearer' or 'api-key'")
        if fields.get("reasoning_input", "drop") not in ("drop", "reasoning_content", "reasoning"):
            raise ConfigError(
                f"{path}: [backends.{name}] reasoning_input must be drop, reasoning_content or reasoning")
        if kind == "embedded":
            spec.setdefault("queue", values["embedded_queue"])
            spec.setdefault("threads", values["embedded_threads"])
        backends[name] = BackendConfig(name=name, kind=kind, api_key=api_key, options=spec, **fields)
    for model, spec in (file_data.get("models") or {}).items():
        if isinstance(spec, str):
            spec = {"backend": spec}
        if not isinstance(spec, dict) or "backend" not in spec:
            raise ConfigError(f'{path}: [models] "{model}" needs a backend')
        if spec["backend"] not in backends:
            raise ConfigError(f'{path}: [models] "{model}" names unknown backend {spec["backend"]!r}')
        route = Route(backend=spec["backend"], model=spec.get("model"))
        if model == "*":
            default_route = route
        else:
            routes[model] = route
    for entry in values.get("model_file", ()):
        name, sep, file = entry.partition("=")
        if not sep or not name or not file:
            raise ConfigError(f"--model-file wants NAME=PATH.gguf, got {entry!r}")
        if not os.path.isfile(file):
            raise ConfigError(f"--model-file {name}: no such file {file}")
        backends[f"file:{name}"] = BackendConfig(
            name=f"file:{name}", kind="embedded", model_file=file,
            options={"queue": values["embedded_queue"], "threads": values["embedded_threads"]})
        routes[name] = Route(backend=f"file:{name}", model=name)
    if values.get("upstream_base_url"):
        backends["upstream"] = BackendConfig(
            name="upstream",
            kind="chat_completions",
            base_url=values["upstream_base_url"],
            api_key=values.get("upstream_api_key"),
            timeout=timeout,
        )
        if default_route is None:
            default_route = Route(backend="upstream")
    return tuple(backends.values()), routes, default_route


def check(settings: Settings) -> None:
    if not settings.api_key and not settings.is_loopback_host:
        raise ConfigError(
            f"refusing to listen on {settings.host} without an API key: pass --api-key (or "
            "RESPONSA_API_KEY), or listen on a loopback host such as 127.0.0.1"
        )
    if set(settings.admin_key) & set(settings.api_key):
        raise ConfigError("an --admin-key must not also be an --api-key")
    if settings.log_level not in ("debug", "info", "warning", "error"):
        raise ConfigError("--log-level must be debug, info, warning or error")
    if settings.retention < 60:
        raise ConfigError("--retention must be at least 60 seconds")
    if settings.unstored_background_window < 1:
        raise ConfigError("--unstored-background-window must be at least 1 second")
    if settings.workers < 1:
        raise ConfigError("--workers must be at least 1")
    if settings.max_background_runs < 1:
        raise ConfigError("--max-background-runs must be at least 1")
    if settings.embedded_queue < 0 or settings.embedded_threads < 0:
        raise ConfigError("--embedded-queue and --embedded-threads must not be negative")
    if settings.mcp_timeout < 1 or settings.mcp_max_output < 1:
        raise ConfigError("--mcp-timeout and --mcp-max-output must be positive")
    if settings.database_pool_size < 1:
        raise ConfigError("--database-pool-size must be at least 1")
    if settings.metrics_port is not None and settings.metrics_port == settings.port and \
            (settings.metrics_host or settings.host) == settings.host:
        raise ConfigError("--metrics-port must differ from --port: metrics are served apart from the API")
    if settings.usage_flush_interval < 1 or settings.limit_minute < 1 or settings.limit_day < 1:
        raise ConfigError("--usage-flush-interval, --limit-minute and --limit-day must be at least 1 second")
    if settings.lease_duration < 2:
        raise ConfigError("--lease-duration must be at least 2 seconds")
    if settings.database_url and not settings.database_url.startswith(("postgres://", "postgresql://")):
        raise ConfigError("--database-url must be a postgresql:// URL (SQLite is the default, in --data-dir)")
    if settings.upstream_base_url and not settings.upstream_base_url.startswith(("http://", "https://")):
        raise ConfigError("--upstream-base-url must be an http(s) URL")
    if settings.images_base_url and not settings.images_base_url.startswith(("http://", "https://")):
        raise ConfigError("--images-base-url must be an http(s) URL")
    _check_web_search(settings)
    if settings.embeddings_base_url and not settings.embeddings_base_url.startswith(("http://", "https://")):
        raise ConfigError("--embeddings-base-url must be an http(s) URL")
    for backend in settings.backends:
        if backend.options.get("files", "text") not in ("pass", "text"):
            raise ConfigError(f"[backends.{backend.name}] files must be 'pass' or 'text'")


def _check_web_search(settings: Settings) -> None:
    provider, url = settings.web_search_provider, settings.web_search_url
    if provider is None and (url or settings.web_search_api_key):
        raise ConfigError("--web-search-url and --web-search-api-key need --web-search-provider (searxng or brave)")
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError("--web-search-url must be an http(s) URL")
    if provider == "searxng" and not url:
        raise ConfigError("--web-search-provider searxng needs --web-search-url, the SearXNG instance's address")
    if provider == "brave" and not settings.web_search_api_key:
        raise ConfigError("--web-search-provider brave needs --web-search-api-key (or RESPONSA_WEB_SEARCH_API_KEY), "
                          "a Brave Search API subscription token")
