"""Shared fixtures: one scripted engine and one live server per session, SDK clients per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from harness import KEY_A, KEY_B, ScriptedEngine, ServerProcess
from openai import AsyncOpenAI, AzureOpenAI, OpenAI


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # CI makes optional parts required: a skip there is a failure (see .ci/run).
    if os.environ.get("RESPONSA_REQUIRE_ALL") == "1":
        config._responsa_require_all = True  # type: ignore[attr-defined]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and os.environ.get("RESPONSA_REQUIRE_ALL") == "1" and call.when in ("setup", "call"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if "optional:" not in reason:
            report.outcome = "failed"
            report.longrepr = f"skipped, but RESPONSA_REQUIRE_ALL=1 makes this required: {reason}"


CHROMIUM = "/usr/bin/chromium"  # Debian's, driven by the `playwright` package (never `playwright install`)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the browser tests (computer use, the console)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (./scripts/test installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright is not installed (pip install -e '.[test]')")
    pw = sync_playwright().start()
    try:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()
    finally:
        pw.stop()


@pytest.fixture(scope="session")
def engine() -> Iterator[ScriptedEngine]:
    server = ScriptedEngine().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def server(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared live server: two API keys, the scripted engine upstream."""
    proc = ServerProcess(tmp_path_factory.mktemp("server"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--api-key", KEY_B, "--keepalive-interval", "1")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def pg_server(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A live server like `server`, on a throwaway PostgreSQL database (skips when unreachable)."""
    import pg

    url = pg.create_database("responsa_live")
    proc = ServerProcess(tmp_path_factory.mktemp("pg-server"), "--database-url", url, "--upstream-base-url",
                         engine.base_url, "--api-key", KEY_A, "--api-key", KEY_B, "--keepalive-interval", "1",
                         "--database-pool-size", "2")
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()
        pg.drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def either(request: pytest.FixtureRequest, script) -> ServerProcess:
    """The shared SQLite server, then `pg_server`: tests that both stores must answer alike."""
    return request.getfixturevalue("server" if request.param == "sqlite" else "pg_server")


@pytest.fixture
def script(engine: ScriptedEngine):
    """The engine's script, empty at the start of each test."""
    engine.script.reset()
    yield engine.script
    engine.script.reset()


@pytest.fixture
def client(server: ServerProcess, script) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)


@pytest.fixture
def other_client(server: ServerProcess, script) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY_B, max_retries=0)


@pytest.fixture
def azure_client(server: ServerProcess, script) -> AzureOpenAI:
    return AzureOpenAI(base_url=server.url + "/openai/v1/", api_version="preview", api_key=KEY_A, max_retries=0)


@pytest.fixture
def async_client(server: ServerProcess, script) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
