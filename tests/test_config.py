"""Settings: flags, RESPONSA_* variables, the TOML file and their precedence; backends and model
routes; every ConfigError's message. Then the same through the real `responsa` command."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from harness import ScriptedEngine, ServerProcess, check_response
from openai import OpenAI

from responsa.cli import build_parser
from responsa.config import (
    DAY,
    OPTIONS,
    BackendConfig,
    ConfigError,
    Route,
    Settings,
    load_settings,
    parse_bool,
    parse_duration,
    parse_size,
)
from responsa.store.schema import LATEST

KEY_1 = "k" * 32
KEY_2 = "r" * 40
WriteConfig = Callable[[str], str]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    def write(text: str) -> str:
        path = tmp_path / "responsa.toml"
        path.write_text(text)
        return str(path)

    return write


def load(cli: dict[str, Any] | None = None, env: dict[str, str] | None = None,
         config: str | None = None) -> Settings:
    cli = dict(cli or {})
    if config is not None:
        cli["config"] = config
    return load_settings(cli, environ=env or {})


def from_command_line(*argv: str, env: dict[str, str] | None = None) -> Settings:
    """What `responsa serve ARGV` would run with (cli.main's own path to Settings)."""
    args = build_parser().parse_args(["serve", *argv])
    return load_settings({k: v for k, v in vars(args).items() if k != "command"}, environ=env or {})


# ---- parsers -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("30d", 30 * DAY), (" 2 m ", 120), ("1.5h", 5400),
    (45, 45), (2.5, 2),
])
def test_durations(text: str | int | float, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10w", "-5", "5 minutes", "1e3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid duration .* \(use e\.g\. 3600, 90s, 15m, 12h, 30d\)"):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [
    ("1048576", 1048576), ("512k", 512 * 1024), ("64m", 64 * 1024**2), ("1g", 1024**3), ("2MB", 2 * 1024**2),
    ("8Kb", 8192), (4096, 4096),
])
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1.5m", "12t", "-1", "ten"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid size .* \(use e\.g\. 1048576, 512k, 64m, 1g\)"):
        parse_size(text)


@pytest.mark.parametrize(("text", "value"), [
    ("1", True), ("true", True), ("YES", True), (" on ", True), (True, True),
    ("0", False), ("false", False), ("No", False), ("off", False), ("", False), (False, False),
])
def test_booleans(text: str | bool, value: bool) -> None:
    assert parse_bool(text) is value


def test_bad_boolean() -> None:
    with pytest.raises(ConfigError, match="invalid boolean 'maybe'"):
        parse_bool("maybe")


# ---- every option from the environment and from the file ---------------------------------------

# name -> (RESPONSA_<NAME> text, [server] value, parsed). Each differs from the default, so a value
# that is not applied fails. `config` names the file itself (test_config_file_from_environment).
SAMPLES: dict[str, tuple[str, Any, Any]] = {
    "host": ("127.0.0.2", "127.0.0.2", "127.0.0.2"),
    "port": ("9001", 9001, 9001),
    "workers": ("3", 3, 3),
    "data_dir": ("/srv/responsa", "/srv/responsa", "/srv/responsa"),
    "database_url": ("postgresql://u@db/r", "postgresql://u@db/r", "postgresql://u@db/r"),
    "database_pool_size": ("3", 3, 3),
    "lease_duration": ("2m", "2m", 120),
    "upstream_base_url": ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
    "upstream_api_key": ("sk-up", "sk-up", "sk-up"),
    "upstream_timeout": ("90s", 90, 90),
    "model_file": ("MODEL", ["MODEL"], ("MODEL",)),  # MODEL: tiny=<a file>, filled in below
    "embedded_queue": ("5", 5, 5),
    "embedded_threads": ("3", 3, 3),
    "api_key": ("a-key, b-key", ["a-key", "b-key"], ("a-key", "b-key")),
    "admin_key": ("adm1,adm2", ["adm1", "adm2"], ("adm1", "adm2")),
    "console": ("false", False, False),
    "allow_private_network": ("yes", True, True),
    "allow_private_address": ("10.0.0.0/8, 127.0.0.2", ["10.0.0.0/8", "127.0.0.2"], ("10.0.0.0/8", "127.0.0.2/32")),
    "mcp_timeout": ("5m", "5m", 300),
    "mcp_max_output": ("1k", "1k", 1024),
    "retention": ("12h", "12h", 43200),
    "max_body_size": ("2m", 2097152, 2097152),
    "max_file_size": ("1g", "1g", 1024**3),
    "fetch_image_urls": ("on", True, True),
    "max_background_runs": ("4", 4, 4),
    "request_read_timeout": ("90s", "90s", 90),
    "max_connections": ("500", 500, 500),
    "unstored_background_window": ("5m", "5m", 300),
    "keepalive_interval": ("30s", 30, 30),
    "websocket_idle_timeout": ("2m", 120, 120),
    "log_level": ("debug", "debug", "debug"),
    "access_log": ("off", False, False),
    "log_format": ("json", "json", "json"),
    "metrics_port": ("9464", 9464, 9464),
    "metrics_host": ("0.0.0.0", "0.0.0.0", "0.0.0.0"),
    "drain_timeout": ("1m", "1m", 60),
    "traces": ("on", True, True),
    "usage_flush_interval": ("30s", "30s", 30),
    "limit_minute": ("5s", 5, 5),
    "limit_day": ("1h", "1h", 3600),
    "reasoning_key": (f"{KEY_1},{KEY_2}", [KEY_1, KEY_2], (KEY_1, KEY_2)),
    "stream_dialect": ("open-responses", "open-responses", "open-responses"),
    "images_base_url": ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
    "images_api_key": ("ik", "ik", "ik"),
    "images_model": ("dall-e-3", "dall-e-3", "dall-e-3"),
    "web_search_provider": ("brave", "brave", "brave"),
    "web_search_url": ("http://127.0.0.1:8888", "http://127.0.0.1:8888", "http://127.0.0.1:8888"),
    "web_search_api_key": ("wk", "wk", "wk"),
    "embeddings_base_url": ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1"),
    "embeddings_api_key": ("ek", "ek", "ek"),
    "embeddings_model": ("bge-small", "bge-small", "bge-small"),
    "vector_cache_size": ("64m", "64m", 64 * 1024**2),
}


def test_every_option_has_a_sample() -> None:
    assert set(SAMPLES) | {"config"} == {o.name for o in OPTIONS}
    for name, (_, _, parsed) in SAMPLES.items():
        assert parsed != Settings.__dataclass_fields__[name].default, name


# Options a sample needs beside it to make a valid configuration (the web search options go together).
COMPANIONS: dict[str, dict[str, str]] = {
    "web_search_provider": {"web_search_api_key": "wk"},
    "web_search_url": {"web_search_provider": "searxng"},
    "web_search_api_key": {"web_search_provider": "brave"},
}


def _sample(name: str, value: Any, gguf: Path) -> Any:
    model = f"tiny={gguf}"
    if isinstance(value, list):
        return [model if v == "MODEL" else v for v in value]
    if isinstance(value, tuple):
        return tuple(model if v == "MODEL" else v for v in value)
    return model if value == "MODEL" else value


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_option_from_the_environment(name: str, tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    text, _, parsed = SAMPLES[name]
    companions = {f"RESPONSA_{k.upper()}": v for k, v in COMPANIONS.get(name, {}).items()}
    settings = load(env={f"RESPONSA_{name.upper()}": _sample(name, text, gguf), **companions})
    assert getattr(settings, name) == _sample(name, parsed, gguf)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_option_from_the_config_file(name: str, tmp_path: Path, write_config: WriteConfig) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    _, value, parsed = SAMPLES[name]
    # JSON strings, numbers, booleans and arrays of strings are valid TOML too
    companions = "".join(f"{k} = {json.dumps(v)}\n" for k, v in COMPANIONS.get(name, {}).items())
    path = write_config(f"[server]\n{name} = {json.dumps(_sample(name, value, gguf))}\n{companions}")
    settings = load(config=path)
    assert getattr(settings, name) == _sample(name, parsed, gguf)
    assert settings.config == path


def test_every_option_from_the_command_line(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    argv: list[str] = []
    for opt in OPTIONS:
        if opt.name == "config":
            continue
        text = _sample(opt.name, SAMPLES[opt.name][0], gguf)
        if opt.flag_only:
            argv.append(opt.flag)
        elif opt.repeatable:
            for part in text.split(","):
                argv += [opt.flag, part.strip()]
        else:
            argv += [opt.flag, text]
    settings = from_command_line(*argv)
    for name, (_, _, parsed) in SAMPLES.items():
        assert getattr(settings, name) == _sample(name, parsed, gguf), name


def test_defaults() -> None:
    settings = load(env={"XDG_DATA_HOME": "/xdg"})
    for opt in OPTIONS:
        if opt.name not in ("data_dir", "config"):
            assert getattr(settings, opt.name) == opt.default, opt.name
    assert settings.data_dir == "/xdg/responsa"
    assert settings.config is None
    assert settings.backends == () and settings.routes == {} and settings.default_route is None
    home = load(env={}).data_dir
    assert home == os.path.join(os.path.expanduser("~"), ".local", "share", "responsa")


def test_console_is_on_by_default_on_loopback_only() -> None:
    assert load(env={}).console_on is True
    assert load(env={"RESPONSA_HOST": "0.0.0.0", "RESPONSA_API_KEY": "k"}).console_on is False
    assert load(env={"RESPONSA_HOST": "0.0.0.0", "RESPONSA_API_KEY": "k", "RESPONSA_CONSOLE": "true"}).console_on
    assert load(env={"RESPONSA_CONSOLE": "off"}).console_on is False


def test_the_admin_key_differs_from_the_api_keys() -> None:
    with pytest.raises(ConfigError, match="an --admin-key must not also be an --api-key"):
        load(env={"RESPONSA_API_KEY": "a,b", "RESPONSA_ADMIN_KEY": "b"})


# ---- precedence --------------------------------------------------------------------------------

def test_precedence_flag_env_file_default(write_config: WriteConfig) -> None:
    path = write_config('[server]\nport = 7003\nretention = "3d"\napi_key = ["file-key"]\n')
    env = {"RESPONSA_PORT": "7002", "RESPONSA_API_KEY": "env-1,env-2"}
    assert from_command_line("--config", path, "--port", "7001", "--api-key", "flag-key", env=env).port == 7001
    both = from_command_line("--config", path, "--api-key", "flag-key", env=env)
    assert both.port == 7002 and both.api_key == ("flag-key",) and both.retention == 3 * DAY
    only_file = from_command_line("--config", path)
    assert only_file.port == 7003 and only_file.api_key == ("file-key",)
    assert from_command_line().port == 8080


def test_a_switch_left_off_falls_back_to_the_environment() -> None:
    # store_true switches cannot say "off"; an absent switch leaves the decision to the next source
    assert from_command_line(env={"RESPONSA_ALLOW_PRIVATE_NETWORK": "1"}).allow_private_network is True
    assert from_command_line("--allow-private-network").allow_private_network is True
    assert from_command_line().allow_private_network is False


def test_config_file_from_environment(write_config: WriteConfig) -> None:
    path = write_config("[server]\nport = 7100\n")
    settings = load(env={"RESPONSA_CONFIG": path})
    assert settings.port == 7100 and settings.config == path
    other = Path(path).with_name("other.toml")
    other.write_text("[server]\nport = 7200\n")
    flag_wins = load({"config": str(other)}, env={"RESPONSA_CONFIG": path})
    assert flag_wins.port == 7200 and flag_wins.config == str(other)


def test_empty_environment_list_means_none() -> None:
    assert load(env={"RESPONSA_API_KEY": " , "}).api_key == ()


# ---- backends and model routes -----------------------------------------------------------------

ROUTED = """
[backends.vllm]
base_url = "http://gpu-1:8000/v1"
api_key_env = "VLLM_KEY"
timeout = "5m"
reasoning_input = "reasoning_content"
max_tokens_field = "max_completion_tokens"

[backends.azure]
kind = "chat_completions"
base_url = "https://r.openai.azure.com/openai/v1"
auth = "api-key"
api_key = "literal"
files = "pass"

[backends.small]
kind = "embedded"
model_file = "/models/small.gguf"
context_window = 2048
threads = 2

[backends.fake]
kind = "scripted"

[models]
"gpt-4.1" = { backend = "vllm", model = "Qwen/Qwen3-8B" }
"gpt-4o" = { backend = "azure", model = "my-deployment" }
"tiny" = "small"
"*" = { backend = "vllm" }
"""


def test_backends_and_routes(write_config: WriteConfig) -> None:
    s = load(config=write_config(ROUTED), env={"VLLM_KEY": "from-env", "RESPONSA_EMBEDDED_QUEUE": "7"})
    backends = {b.name: b for b in s.backends}
    assert list(backends) == ["vllm", "azure", "small", "fake"]
    assert backends["vllm"] == BackendConfig(
        name="vllm", kind="chat_completions", base_url="http://gpu-1:8000/v1", api_key="from-env", timeout=300,
        reasoning_input="reasoning_content", options={"max_tokens_field": "max_completion_tokens"})
    assert backends["azure"].auth == "api-key" and backends["azure"].api_key == "literal"
    assert backends["azure"].timeout == 600  # --upstream-timeout's default
    assert backends["azure"].options == {"files": "pass"}
    small = backends["small"]
    assert small.kind == "embedded" and small.model_file == "/models/small.gguf" and small.context_window == 2048
    assert small.options == {"threads": 2, "queue": 7}  # its own threads, --embedded-queue otherwise
    assert backends["fake"].kind == "scripted"
    assert s.routes == {"gpt-4.1": Route("vllm", "Qwen/Qwen3-8B"), "gpt-4o": Route("azure", "my-deployment"),
                        "tiny": Route("small")}
    assert s.default_route == Route("vllm")


def test_backend_timeout_follows_upstream_timeout(write_config: WriteConfig) -> None:
    path = write_config('[backends.a]\nbase_url = "http://e/v1"\n[backends.b]\nbase_url = "http://e/v1"\n'
                        'timeout = 5\n')
    backends = {b.name: b for b in load({"upstream_timeout": "2m"}, config=path).backends}
    assert backends["a"].timeout == 120 and backends["b"].timeout == 5


def test_upstream_flag_is_the_default_route_unless_the_file_has_one(write_config: WriteConfig) -> None:
    plain = load({"upstream_base_url": "http://e:1/v1", "upstream_api_key": "up", "upstream_timeout": "30"})
    assert plain.backends == (BackendConfig(name="upstream", kind="chat_completions", base_url="http://e:1/v1",
                                            api_key="up", timeout=30),)
    assert plain.default_route == Route("upstream") and plain.routes == {}
    path = write_config('[backends.x]\nbase_url = "http://x/v1"\n[models]\n"*" = "x"\n')
    both = load({"upstream_base_url": "http://e:1/v1"}, config=path)
    assert both.default_route == Route("x")
    assert [b.name for b in both.backends] == ["x", "upstream"]


def test_model_file_routes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"GGUF")
    b.write_bytes(b"GGUF")
    s = load({"model_file": [f"alpha={a}"], "embedded_threads": "2"}, env={"RESPONSA_MODEL_FILE": f"beta={b}"})
    assert s.model_file == (f"alpha={a}",)  # the flag replaces the environment's list
    assert s.routes == {"alpha": Route("file:alpha", "alpha")}
    (backend,) = s.backends
    assert backend == BackendConfig(name="file:alpha", kind="embedded", model_file=str(a),
                                    options={"queue": 16, "threads": 2})
    both = load(env={"RESPONSA_MODEL_FILE": f"alpha={a},beta={b}"})
    assert list(both.routes) == ["alpha", "beta"]


def test_model_file_replaces_a_models_entry_of_the_same_name(write_config: WriteConfig, tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    path = write_config('[backends.x]\nbase_url = "http://x/v1"\n[models]\n"m" = "x"\n')
    assert load({"model_file": [f"m={gguf}"]}, config=path).routes["m"] == Route("file:m", "m")


# ---- the loopback rule -------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "::1"])
def test_loopback_hosts_need_no_key(host: str) -> None:
    assert load({"host": host}).is_loopback_host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.com"])
def test_other_hosts_need_a_key(host: str) -> None:
    with pytest.raises(ConfigError) as e:
        load({"host": host})
    assert str(e.value) == (f"refusing to listen on {host} without an API key: pass --api-key (or "
                            "RESPONSA_API_KEY), or listen on a loopback host such as 127.0.0.1")
    assert load({"host": host, "api_key": ["k"]}).host == host
    assert load({"host": host}, env={"RESPONSA_API_KEY": "k"}).api_key == ("k",)


# ---- every ConfigError -------------------------------------------------------------------------

BAD_SETTINGS: list[tuple[dict[str, Any], dict[str, str], str]] = [
    # (command line, environment, the whole message)
    ({"port": "eighty"}, {}, "command line: invalid value for --port: invalid literal for int() with base 10: "
     "'eighty'"),
    ({}, {"RESPONSA_RETENTION": "forever"}, "RESPONSA_RETENTION: invalid value for --retention: invalid "
     "duration 'forever' (use e.g. 3600, 90s, 15m, 12h, 30d)"),
    ({}, {"RESPONSA_MAX_BODY_SIZE": "huge"}, "RESPONSA_MAX_BODY_SIZE: invalid value for --max-body-size: "
     "invalid size 'huge' (use e.g. 1048576, 512k, 64m, 1g)"),
    ({}, {"RESPONSA_ACCESS_LOG": "sometimes"}, "RESPONSA_ACCESS_LOG: invalid value for --access-log: invalid "
     "boolean 'sometimes'"),
    ({"reasoning_key": ["short"]}, {}, "command line: invalid value for --reasoning-key: a reasoning key needs "
     "at least 32 characters (try `openssl rand -base64 32`)"),
    ({"stream_dialect": "sse"}, {}, "command line: invalid value for --stream-dialect: 'sse' is not a stream "
     "dialect (use openai or open-responses)"),
    ({"log_level": "trace"}, {}, "--log-level must be debug, info, warning or error"),
    ({"retention": "59"}, {}, "--retention must be at least 60 seconds"),
    ({"max_background_runs": "0"}, {}, "--max-background-runs must be at least 1"),
    ({"mcp_timeout": "0"}, {}, "--mcp-timeout and --mcp-max-output must be positive"),
    ({"mcp_max_output": "0"}, {}, "--mcp-timeout and --mcp-max-output must be positive"),
    ({"embedded_queue": "-1"}, {}, "--embedded-queue and --embedded-threads must not be negative"),
    ({"embedded_threads": "-2"}, {}, "--embedded-queue and --embedded-threads must not be negative"),
    ({"database_pool_size": "0"}, {}, "--database-pool-size must be at least 1"),
    ({"lease_duration": "1"}, {}, "--lease-duration must be at least 2 seconds"),
    ({"database_url": "sqlite:///x.db"}, {}, "--database-url must be a postgresql:// URL (SQLite is the "
     "default, in --data-dir)"),
    ({"upstream_base_url": "127.0.0.1:8000/v1"}, {}, "--upstream-base-url must be an http(s) URL"),
    ({"images_base_url": "ftp://images"}, {}, "--images-base-url must be an http(s) URL"),
    ({"web_search_provider": "google"}, {}, "command line: invalid value for --web-search-provider: 'google' is "
     "not a web search provider (use searxng or brave)"),
    ({"web_search_provider": "searxng"}, {}, "--web-search-provider searxng needs --web-search-url, the SearXNG "
     "instance's address"),
    ({"web_search_provider": "brave"}, {}, "--web-search-provider brave needs --web-search-api-key (or "
     "RESPONSA_WEB_SEARCH_API_KEY), a Brave Search API subscription token"),
    ({"web_search_url": "http://127.0.0.1:8888"}, {}, "--web-search-url and --web-search-api-key need "
     "--web-search-provider (searxng or brave)"),
    ({"web_search_provider": "searxng", "web_search_url": "searx.local"}, {}, "--web-search-url must be an "
     "http(s) URL"),
    ({"embeddings_base_url": "ftp://e"}, {}, "--embeddings-base-url must be an http(s) URL"),
    ({"model_file": ["model.gguf"]}, {}, "--model-file wants NAME=PATH.gguf, got 'model.gguf'"),
    ({"model_file": ["=x.gguf"]}, {}, "--model-file wants NAME=PATH.gguf, got '=x.gguf'"),
    ({"model_file": ["m=/no/such/file.gguf"]}, {}, "--model-file m: no such file /no/such/file.gguf"),
    # `--api-key "$KEY"` with KEY unset: an empty key would let in every request sending an empty one.
    ({"api_key": [""]}, {}, "command line: invalid value for --api-key: an API key must not be empty or "
     "blank (is the variable it comes from unset?)"),
    ({"api_key": ["a-key", "  "]}, {}, "command line: invalid value for --api-key: an API key must not be "
     "empty or blank (is the variable it comes from unset?)"),
    ({"api_key": ["a-key "]}, {}, "command line: invalid value for --api-key: an API key must not start or "
     "end with whitespace (HTTP headers drop it, so no client could send it)"),
    ({"allow_private_address": ["10.0.0.300"]}, {}, "command line: invalid value for --allow-private-address: "
     "'10.0.0.300' is not an IP address or CIDR network (e.g. 10.0.0.0/8, fd00::/8, 192.168.1.20)"),
]


@pytest.mark.parametrize(("cli", "env", "message"), BAD_SETTINGS)
def test_bad_settings(cli: dict[str, Any], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(cli, env)
    assert str(e.value) == message


BAD_FILES: list[tuple[str, str]] = [
    # (TOML, the message after "<path>: ", or after "<path> " for [server])
    ("[server]\nport = 1\nprot = 2\nhots = 3\n", "[server]: unknown keys ['hots', 'prot']"),
    ('[server]\nport = "x"\n', "[server]: invalid value for --port: invalid literal for int() with base 10: 'x'"),
    ("[server]\napi_key = 5\n", "[server]: invalid value for --api-key: 'int' object is not iterable"),
    ('[server]\napi_key = ["a", ""]\n', "[server]: invalid value for --api-key: an API key must not be empty or "
     "blank (is the variable it comes from unset?)"),
    ('[server]\napi_key = ["a", 5]\n', "[server]: invalid value for --api-key: expected a string, got int"),
    ('[backends]\nx = "http://e/v1"\n', "[backends.x] must be a table"),
    ('[backends.x]\nkind = "vllm"\n', "[backends.x] kind must be chat_completions, embedded or scripted"),
    ('[backends.x]\napi_key_env = "NOT_SET_ANYWHERE"\nbase_url = "http://e/v1"\n',
     "[backends.x] api_key_env NOT_SET_ANYWHERE is not set"),
    ("[backends.x]\n", "[backends.x] needs base_url"),
    ('[backends.x]\nkind = "embedded"\n', "[backends.x] needs model_file"),
    ('[backends.x]\nbase_url = "http://e/v1"\nauth = "basic"\n', "[backends.x] auth must be 'bearer' or 'api-key'"),
    ('[backends.x]\nbase_url = "http://e/v1"\nreasoning_input = "think"\n',
     "[backends.x] reasoning_input must be drop, reasoning_content or reasoning"),
    ('[backends.x]\nbase_url = "http://e/v1"\ntimeout = "soon"\n',
     "[backends.x] timeout: invalid duration 'soon' (use e.g. 3600, 90s, 15m, 12h, 30d)"),
    ('[backends.x]\nbase_url = "http://e/v1"\n[models]\n"m" = { model = "n" }\n', '[models] "m" needs a backend'),
    ('[backends.x]\nbase_url = "http://e/v1"\n[models]\n"m" = 3\n', '[models] "m" needs a backend'),
    ('[backends.x]\nbase_url = "http://e/v1"\n[models]\n"m" = "y"\n', "[models] \"m\" names unknown backend 'y'"),
    ('[models]\n"*" = { backend = "nowhere" }\n', "[models] \"*\" names unknown backend 'nowhere'"),
]


@pytest.mark.parametrize(("toml", "message"), BAD_FILES)
def test_bad_config_files(toml: str, message: str, write_config: WriteConfig) -> None:
    path = write_config(toml)
    with pytest.raises(ConfigError) as e:
        load(config=path)
    separator = " " if message.startswith("[server]") else ": "
    assert str(e.value) == f"{path}{separator}{message}"


def test_bad_files_option(write_config: WriteConfig) -> None:
    path = write_config('[backends.x]\nbase_url = "http://e/v1"\nfiles = "upload"\n')
    with pytest.raises(ConfigError, match=r"^\[backends\.x\] files must be 'pass' or 'text'$"):
        load(config=path)


def test_unreadable_and_malformed_files(write_config: WriteConfig, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=rf"^cannot read config file {re.escape(str(missing))}: \[Errno 2\] "):
        load(config=str(missing))
    path = write_config("[server\nport = 1\n")
    with pytest.raises(ConfigError, match=rf"^config file {re.escape(path)}: Expected ']' at the end of a table "
                                          r"declaration \(at line 1, column 8\)$"):
        load(config=path)


# ---- the real command ------------------------------------------------------------------------

def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSA_")}
    return subprocess.run([sys.executable, "-m", "responsa", *args], capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=60)


def test_serve_refuses_a_public_host_without_keys(tmp_path: Path) -> None:
    run = _run("serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path), "--upstream-base-url", "http://e/v1")
    assert run.returncode == 2
    assert run.stderr == ("responsa: refusing to listen on 0.0.0.0 without an API key: pass --api-key (or "
                          "RESPONSA_API_KEY), or listen on a loopback host such as 127.0.0.1\n")
    assert not (tmp_path / "responsa.db").exists()  # refused before anything was opened
    bad = _run("serve", "--data-dir", str(tmp_path), env={"RESPONSA_RETENTION": "forever"})
    assert bad.returncode == 2 and bad.stderr.startswith("responsa: RESPONSA_RETENTION: invalid value")


def test_serve_refuses_an_empty_api_key(tmp_path: Path) -> None:
    """`--api-key "$KEY"` with KEY unset: refused even on loopback, before anything is opened."""
    run = _run("serve", "--data-dir", str(tmp_path), "--upstream-base-url", "http://e/v1", "--api-key", "")
    assert run.returncode == 2
    assert run.stderr == ("responsa: command line: invalid value for --api-key: an API key must not be empty "
                          "or blank (is the variable it comes from unset?)\n")
    assert not (tmp_path / "responsa.db").exists()


def test_migrate_creates_the_schema(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    # RESPONSA_HOST is meant for `serve`: migrate listens on nothing and must not refuse it
    run = _run("migrate", "--data-dir", str(data), env={"RESPONSA_HOST": "0.0.0.0"})
    assert run.returncode == 0, run.stderr
    assert run.stdout == f"schema up to date ({data})\n"
    with sqlite3.connect(data / "responsa.db") as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (LATEST,)
        assert db.execute("SELECT count(*) FROM responses").fetchone() == (0,)
    again = _run("migrate", "--data-dir", str(data))
    assert again.returncode == 0 and again.stdout == run.stdout


# ---- two engines behind one server, routed by the config file --------------------------------

@pytest.fixture(scope="module")
def second_engine() -> Iterator[ScriptedEngine]:
    engine = ScriptedEngine().start()
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def routed_server(engine: ScriptedEngine, second_engine: ScriptedEngine,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("routed")
    config = data / "responsa.toml"
    config.write_text(f"""
[server]
api_key = ["routed-key"]

[backends.one]
base_url = "{engine.base_url}"

[backends.two]
base_url = "{second_engine.base_url}"
api_key_env = "ENGINE_TWO_KEY"

[models]
"alpha" = {{ backend = "one", model = "engine-alpha" }}
"beta" = "two"
"*" = {{ backend = "one", model = "engine-default" }}
""")
    proc = ServerProcess(data, "--config", str(config), env={"ENGINE_TWO_KEY": "two-secret"}).start()
    yield proc
    proc.stop()


def test_config_routes_models_to_engines(routed_server: ServerProcess, script,
                                         second_engine: ScriptedEngine) -> None:
    second_engine.script.reset()
    client = OpenAI(base_url=routed_server.base_url, api_key="routed-key", max_retries=0)
    script.add({"content": "from one"}, {"content": "one again"})
    second_engine.script.add({"content": "from two"})

    alpha = client.responses.create(model="alpha", input="to alpha")
    beta = client.responses.create(model="beta", input="to beta")
    other = client.responses.create(model="gpt-4.1-mini", input="to anything else")
    for r in (alpha, beta, other):
        check_response(r)
    assert (alpha.output_text, beta.output_text, other.output_text) == ("from one", "from two", "one again")
    assert (alpha.model, beta.model, other.model) == ("alpha", "beta", "gpt-4.1-mini")  # the client's names

    assert [(r["model"], r["messages"][-1]["content"]) for r in script.requests] == [
        ("engine-alpha", "to alpha"), ("engine-default", "to anything else")]
    assert [(r["model"], r["messages"][-1]["content"]) for r in second_engine.requests] == [("beta", "to beta")]

    assert [m.id for m in client.models.list()] == ["alpha", "beta"]
    with pytest.raises(openai.AuthenticationError):  # the [server] key is the only one
        OpenAI(base_url=routed_server.base_url, api_key="wrong", max_retries=0).models.list()
