"""SQLite on a full disk (issue 21): once a write has failed nothing more is acknowledged, /health
says so, and the server recovers by itself when space comes back.

The server runs in a mount namespace of its own (`unshare -m`) with its data dir on a small
tmpfs, part of which a filler file takes; the test frees that space through /proc/PID/root.
Needs root (CI runs as root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import openai
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, wait_for
from openai import OpenAI

MOUNT = 'mount -t tmpfs -o size=3m tmpfs "$0" && head -c 1200k /dev/zero > "$0/filler" && exec "$@"'


@pytest.fixture
def cramped(engine: ScriptedEngine, tmp_path: Path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to give the server a small disk of its own")
    db = tmp_path / "db"
    db.mkdir()
    server = ServerProcess(tmp_path, "--upstream-base-url", engine.base_url, "--api-key", KEY_A,
                           "--data-dir", str(db), wrapper=["unshare", "-m", "sh", "-c", MOUNT, str(db)])
    server.start()
    try:
        yield server, db
    finally:
        server.stop()


def test_a_full_disk_refuses_new_work_instead_of_losing_it(cramped, script) -> None:
    server, db = cramped
    client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    big = "x" * 100_000
    acknowledged: list[str] = []
    refused = None
    for _ in range(100):
        try:
            acknowledged.append(client.responses.create(model="m", input=big).id)
        except openai.APIStatusError as e:
            refused = e
            break
    assert refused is not None, "the disk never filled up"
    assert refused.status_code == 503 and refused.response.headers.get("retry-after")
    assert "cannot be written" in refused.message
    # A plain response is answered before its commit: the one answered as the disk filled may not
    # be readable yet, but no later one was accepted.
    missing = []
    for rid in acknowledged:
        try:
            client.responses.retrieve(rid)
        except openai.NotFoundError:
            missing.append(rid)
    assert missing in ([], acknowledged[-1:]), f"{len(missing)} acknowledged responses are missing"
    health = httpx.get(server.url + "/health")
    assert health.status_code == 503 and health.json()["database"] is False
    # store=false needs no disk: still served.
    assert client.responses.create(model="m", input="hi", store=False).status == "completed"

    assert server.proc is not None
    (Path(f"/proc/{server.proc.pid}/root") / str(db).lstrip("/") / "filler").unlink()
    wait_for(lambda: httpx.get(server.url + "/health").status_code == 200, timeout=10)
    # ...and once there is room again, that one is stored too: nothing acknowledged was lost.
    for rid in acknowledged:
        assert client.responses.retrieve(rid).status == "completed"
    again = client.responses.create(model="m", input="space again")
    assert client.responses.retrieve(again.id).status == "completed"
