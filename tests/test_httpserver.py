"""Slow and idle clients (issue 21, Resources): read deadlines and the connection cap, on the
real server over raw sockets."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess


@pytest.fixture(scope="module")
def strict(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("strict"), "--upstream-base-url", engine.base_url,
                           "--api-key", KEY_A, "--request-read-timeout", "1", "--max-connections", "4")
    server.start()
    yield server
    server.stop()


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything until the server closes the connection, and how long that took."""
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - started


@pytest.mark.parametrize("sent", [
    b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: app",  # half the headers
    b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
    b"Authorization: Bearer " + KEY_A.encode() + b"\r\n\r\n{\"model\": \"m\",",  # half the body
], ids=["headers", "body"])
def test_a_request_that_does_not_arrive_in_time_gets_408_and_is_closed(strict: ServerProcess, sent: bytes) -> None:
    with connect(strict) as sock:
        sock.sendall(sent)
        data, took = read_all(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b'"code":"request_timeout"' in data
    assert 0.9 < took < 5
    assert "Traceback" not in strict.log()


def test_a_connection_that_sends_nothing_is_closed(strict: ServerProcess) -> None:
    with connect(strict) as sock:
        data, took = read_all(sock)
    assert data == b"" and 4 < took < 9  # uvicorn's keep-alive timeout: 5 s


def test_past_the_connection_cap_requests_get_503_until_connections_close(strict: ServerProcess) -> None:
    idle = [connect(strict) for _ in range(3)]
    try:
        time.sleep(0.2)  # the server has accepted them
        refused = httpx.get(strict.url + "/health")
        assert refused.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while httpx.get(strict.url + "/health").status_code != 200:
        assert time.monotonic() < deadline, "the cap did not free up after connections closed"
        time.sleep(0.05)


def test_a_slow_but_timely_request_is_served(strict: ServerProcess, tmp_path: Path) -> None:
    body = b'{"model": "m", "input": "slow"}'
    with connect(strict) as sock:
        sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Authorization: Bearer " + KEY_A.encode() + b"\r\nConnection: close\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        for i in range(0, len(body), 8):
            sock.sendall(body[i:i + 8])
            time.sleep(0.1)
        data, _ = read_all(sock)
    assert data.startswith(b"HTTP/1.1 200 "), data[:300]
