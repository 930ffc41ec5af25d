"""`responsa keys`: keys made by the server, stored as hashes, in force without a restart.

The real command is run beside live servers: one on SQLite (the command shares its database
file), and two replicas on PostgreSQL, where a change reaches both at once.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pg
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, wait_for
from openai import OpenAI


def keys(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESPONSA_")}
    done = subprocess.run([sys.executable, "-m", "responsa", "keys", *args], capture_output=True, text=True,
                          timeout=60, env=env)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def create(store: list[str], name: str, project: str | None = None) -> tuple[str, str]:
    """(secret, key id) of a new key."""
    out = keys("create", "--name", name, *(["--project", project] if project else []), *store).stdout
    secret = out.splitlines()[0]
    key_id = re.search(r"id: (key_\w+)", out)
    assert secret.startswith("rsk-") and key_id, out
    return secret, key_id.group(1)


def sdk(server: ServerProcess, key: str) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def works(server: ServerProcess, key: str) -> bool:
    try:
        sdk(server, key).models.list()
    except openai.AuthenticationError:
        return False
    return True


@pytest.fixture
def sqlite_server(engine: ScriptedEngine, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path / "data", "--upstream-base-url", engine.base_url, "--api-key", KEY_A)
    proc.start()
    yield proc
    proc.stop()


def test_keys_beside_a_running_sqlite_server(sqlite_server: ServerProcess, script) -> None:
    server = sqlite_server
    store = ["--data-dir", str(server.data_dir)]
    ci, ci_id = create(store, "ci")
    alice, _ = create(store, "alice", project="research")
    bob, _ = create(store, "bob", project="research")
    outsider, _ = create(store, "outsider")
    # In force without a restart, beside the --api-key key, which keeps working.
    wait_for(lambda: works(server, ci), timeout=10)
    assert works(server, KEY_A)
    assert not works(server, "rsk-not-a-key")

    script.add({"content": "made by ci"}, {"content": "made by alice"})
    by_ci = sdk(server, ci).responses.create(model="m", input="hi")
    by_alice = sdk(server, alice).responses.create(model="m", input="hi")
    # A project's keys share what they make; anyone else gets a 404.
    assert sdk(server, bob).responses.retrieve(by_alice.id).output_text == "made by alice"
    for stranger in (outsider, KEY_A, ci):
        with pytest.raises(openai.NotFoundError):
            sdk(server, stranger).responses.retrieve(by_alice.id)

    # Rotation: the old secret stops working; what the key made stays its own.
    out = keys("rotate", ci_id, *store).stdout
    new_ci = out.splitlines()[0]
    assert new_ci.startswith("rsk-") and new_ci != ci
    wait_for(lambda: not works(server, ci), timeout=10)
    assert sdk(server, new_ci).responses.retrieve(by_ci.id).output_text == "made by ci"

    keys("revoke", ci_id, *store)
    wait_for(lambda: not works(server, new_ci), timeout=10)
    missing = keys("revoke", ci_id, *store, check=False)
    assert missing.returncode == 1 and "no key in use" in missing.stderr

    listed = keys("list", *store).stdout.splitlines()
    assert listed[0].split("\t") == ["id", "name", "project", "created", "state", "limits"]
    rows = {line.split("\t")[1]: line.split("\t") for line in listed[1:]}
    assert rows["ci"][4] == "revoked" and rows["alice"][2] == "research" and rows["bob"][4] == "active"
    # Only hashes are kept: no secret is anywhere in the database or the log.
    database = b"".join(p.read_bytes() for p in server.data_dir.glob("responsa.db*") if p.is_file())
    for secret in (ci, new_ci, alice, bob, outsider):
        assert secret.encode() not in database and secret not in server.log()
        assert secret not in "\n".join(listed)


def test_a_server_without_api_keys_needs_one_once_keys_exist(engine: ScriptedEngine, script,
                                                            tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "open", "--upstream-base-url", engine.base_url).start()
    try:
        assert works(server, "anything")  # loopback, no keys: every caller is the one local owner
        secret, _ = create(["--data-dir", str(server.data_dir)], "first")
        wait_for(lambda: not works(server, "anything"), timeout=10)
        assert works(server, secret)
    finally:
        server.stop()


def statuses(calls: list, count: int) -> list[int]:
    out = []
    for n in range(count):
        try:
            calls[n % len(calls)]()
            out.append(200)
        except openai.RateLimitError as e:
            assert e.response.headers["retry-after"].isdigit()
            assert e.body["code"] == "rate_limit_exceeded" and "(RPM): Limit 2," in e.body["message"]
            out.append(429)
    return out


def test_a_key_limit_refuses_requests_past_it(sqlite_server: ServerProcess) -> None:
    server = sqlite_server
    store = ["--data-dir", str(server.data_dir)]
    secret, key_id = create(store, "limited")
    wait_for(lambda: works(server, secret), timeout=10)
    keys("limit", key_id, "--requests-per-minute", "2", *store)
    client = sdk(server, secret)
    # 5 requests fall in at most two minutes, so one of those minutes has more than 2.
    wait_for(lambda: 429 in statuses([client.models.list], 5), timeout=10)
    assert works(server, KEY_A)  # other keys are not limited
    keys("limit", key_id, "--requests-per-minute", "0", *store)
    wait_for(lambda: statuses([client.models.list], 5) == [200] * 5, timeout=10)
    assert "limited\t-\t" in keys("list", *store).stdout


def test_bad_key_arguments(tmp_path: Path) -> None:
    data = str(tmp_path / "data")  # a fresh store each run: nothing shared between runs or machines
    done = keys("create", "--name", "bad\nname", "--data-dir", data, check=False)
    assert done.returncode == 2 and "invalid name" in done.stderr and "Traceback" not in done.stderr
    done = keys("rotate", "key_nope", "--data-dir", data, check=False)
    assert done.returncode == 1 and "no key in use with id key_nope" in done.stderr


def test_keys_reach_every_replica_at_once(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    url = pg.create_database("responsa_keys")
    replicas = [ServerProcess(tmp_path / name, "--database-url", url, "--upstream-base-url", engine.base_url,
                              "--api-key", KEY_A, "--database-pool-size", "2") for name in ("a", "b")]
    try:
        for r in replicas:
            r.start()
        store = ["--database-url", url]
        secret, key_id = create(store, "shared", project="ops")
        a, b = replicas
        for r in replicas:  # told by the command (NOTIFY): well within the cache's 5 s
            wait_for(lambda r=r: works(r, secret), timeout=3)
        script.add({"content": "on A"})
        made = sdk(a, secret).responses.create(model="m", input="hi")
        other, _ = create(store, "other", project="ops")
        assert sdk(b, other).responses.retrieve(made.id).output_text == "on A"
        keys("revoke", key_id, *store)
        for r in replicas:
            wait_for(lambda r=r: not works(r, secret), timeout=3)
        assert works(b, other) and works(a, KEY_A)
        # A limit counts the requests made through every replica together.
        limited, limited_id = create(store, "limited", project="ops")
        keys("limit", limited_id, "--requests-per-minute", "2", *store)
        calls = [sdk(a, limited).models.list, sdk(b, limited).models.list]
        wait_for(lambda: 429 in statuses(calls, 5), timeout=3)
        assert secret not in str(pg.admin_on(url, "SELECT * FROM api_keys"))
    finally:
        for r in replicas:
            r.stop()
        pg.drop_database(url)
