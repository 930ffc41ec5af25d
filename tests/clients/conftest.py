"""Fixtures of the client matrix: a server that hands reasoning back to the engine, and a
recording proxy in front of it (see recorder.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from harness import KEY_A, KEY_B, ScriptedEngine, ServerProcess
from recorder import RecordingProxy


@pytest.fixture(scope="session")
def clients_server(engine: ScriptedEngine,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A live server whose engine gets reasoning back as `reasoning_content`, so a test can see
    that reasoning a client echoed (in the clear or encrypted) reached the model again."""
    data = tmp_path_factory.mktemp("clients-server")
    config = data / "responsa.toml"
    config.write_text(
        "[backends.engine]\n"
        f'base_url = "{engine.base_url}"\n'
        'reasoning_input = "reasoning_content"\n'
        "[models]\n"
        '"*" = { backend = "engine" }\n')
    proc = ServerProcess(data, "--config", str(config), "--api-key", KEY_A, "--api-key", KEY_B,
                         "--keepalive-interval", "1")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def proxy_server(clients_server: ServerProcess) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(clients_server.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def proxy(proxy_server: RecordingProxy, script) -> Iterator[RecordingProxy]:
    """The recording proxy, emptied for this test (and the engine's script with it)."""
    proxy_server.reset()
    yield proxy_server
    proxy_server.reset()
