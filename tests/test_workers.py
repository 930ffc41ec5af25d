"""`responsa serve --workers N`: worker processes sharing one port and one database.

The kernel hands each new connection to one worker; the tests find out which (from the
server side of the connection, in /proc) so that they can make a request on one worker and
the next on another, deterministically.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pg
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, check_events, check_response, free_port, wait_for, wire
from openai import OpenAI

SLOW = " ".join(f"w{n}" for n in range(80))  # 80 chunks, 0.05 s apart: 4 s of streaming


# ---- which worker holds a connection ----------------------------------------------------------


def workers_of(server: ServerProcess) -> list[int]:
    assert server.proc is not None
    pid = server.proc.pid
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def holder(server: ServerProcess, client: httpx.Client) -> int:
    """The pid of the worker that serves `client`'s (one, kept-alive) connection (asked of `ss`:
    /proc/net/tcp is not complete in every sandbox)."""
    with client.stream("GET", "/health") as r:
        assert r.status_code == 200
        client_port = r.extensions["network_stream"].get_extra_info("client_addr")[1]
        r.read()  # the connection stays open for the next request only once its body is read
    out = subprocess.run(["ss", "-Htnp", "state", "established",
                          f"( sport = :{server.port} and dport = :{client_port} )"],
                         capture_output=True, text=True, check=True).stdout
    pids = {int(p) for p in re.findall(r"pid=(\d+)", out)} & set(workers_of(server))
    assert len(pids) == 1, out
    return pids.pop()


def one_per_worker(server: ServerProcess, *, wanted: set[int] | None = None) -> dict[int, httpx.Client]:
    """A kept-alive connection to each worker (or to those `wanted`); new connections land on
    workers at random."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to tell which worker holds a connection")
    wanted = set(workers_of(server)) if wanted is None else wanted
    found: dict[int, httpx.Client] = {}
    for _ in range(200):
        client = httpx.Client(base_url=server.url, limits=httpx.Limits(max_connections=1),
                              headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30)
        pid = holder(server, client)
        if pid in found or pid not in wanted:
            client.close()
        else:
            found[pid] = client
            if set(found) == wanted:
                return found
    raise AssertionError("the kernel never gave a connection to some worker")


def sdk(http_client: httpx.Client) -> OpenAI:
    return OpenAI(base_url=str(http_client.base_url) + "/v1", api_key=KEY_A, max_retries=0, http_client=http_client)


def read_until(stream: Any, stop: Any) -> list[dict]:
    events = []
    for ev in stream:
        events.append(wire(ev))
        if stop(events[-1]):
            break
    return events


# ---- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for SQLite in the server's data dir, else a PostgreSQL URL."""
    if request.param == "sqlite":
        yield None
        return
    url = pg.create_database("responsa_workers")
    yield url
    pg.drop_database(url)


def start_workers(tmp: Path, url: str | None, engine: ScriptedEngine, *extra: str) -> ServerProcess:
    store = ["--database-url", url] if url else []
    server = ServerProcess(tmp, "--workers", "2", *store, "--upstream-base-url", engine.base_url,
                           "--api-key", KEY_A, "--lease-duration", "2", "--keepalive-interval", "1", *extra)
    server.start()
    wait_for(lambda: len(workers_of(server)) == 2)
    wait_for(lambda: "worker 1 of 2" in server.log())
    return server


def lease_owners(server: ServerProcess, url: str | None, ids: list[str]) -> dict[str, str | None]:
    if url:
        rows = pg.admin_on(url, "SELECT id, lease_owner FROM responses WHERE id = ANY($1::text[])", ids)
    else:
        with contextlib.closing(sqlite3.connect(server.data_dir / "responsa.db")) as conn:
            rows = conn.execute(f"SELECT id, lease_owner FROM responses WHERE id IN ({','.join('?' * len(ids))})",
                                ids).fetchall()
    return {rid: owner for rid, owner in rows}


@pytest.fixture(scope="module")
def served(database: str | None, engine: ScriptedEngine,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_workers(tmp_path_factory.mktemp("workers"), database, engine)
    yield server
    server.stop()


@pytest.fixture
def pair(served: ServerProcess, script) -> Iterator[tuple[OpenAI, OpenAI]]:
    """SDK clients, each on one connection, to different workers."""
    clients = one_per_worker(served)
    a, b = clients.values()
    yield sdk(a), sdk(b)
    for c in clients.values():
        c.close()


# ---- tests ---------------------------------------------------------------------------------------


def test_one_server_per_sqlite_data_dir(served: ServerProcess, database: str | None) -> None:
    if database:
        pytest.skip("optional: PostgreSQL is shared by any number of servers")
    for args in ((), ("--workers", "2")):
        done = subprocess.run([sys.executable, "-m", "responsa", "serve", "--port", str(free_port()), *args,
                               "--data-dir", str(served.data_dir)], capture_output=True, text=True, timeout=60,
                              env={k: v for k, v in os.environ.items() if not k.startswith("RESPONSA_")})
        assert done.returncode != 0
        assert "another Responsa process is using" in done.stderr + done.stdout


def test_each_worker_serves_what_the_other_stored(pair, script) -> None:
    a, b = pair
    script.add({"content": "stored by one worker"})
    r = a.responses.create(model="m", input="hello")
    got = b.responses.retrieve(r.id)  # at once: the answer came after the commit
    check_response(got)
    assert got.output_text == "stored by one worker"
    script.add({"content": "continued on the other"})
    r2 = b.responses.create(model="m", input="more", previous_response_id=r.id)
    assert r2.output_text == "continued on the other"
    assert script.requests[-1]["messages"][:2] == [{"role": "user", "content": "hello"},
                                                    {"role": "assistant", "content": "stored by one worker"}]
    # Deleted through the worker that never read the chain: the other, which has it cached, must
    # not continue it.
    a.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError, match="cannot be continued"):
        b.responses.create(model="m", input="again", previous_response_id=r2.id)


def test_a_run_on_one_worker_is_resumed_and_cancelled_through_the_other(served: ServerProcess, script) -> None:
    clients = one_per_worker(served)
    (_, a), (pid_b, b) = clients.items()
    b2 = one_per_worker(served, wanted={pid_b})[pid_b]  # the stream holds b's connection
    script.add({"content": SLOW, "delay": 0.05})
    r = sdk(a).responses.create(model="m", input="write a lot", background=True)
    stream = sdk(b).responses.retrieve(r.id, stream=True, starting_after=1)
    events = read_until(stream, lambda ev: ev["type"] == "response.output_text.delta" and ev["delta"].strip() == "w2")
    assert events[0]["sequence_number"] == 2
    cancelled = sdk(b2).responses.cancel(r.id)
    assert cancelled.status == "cancelled"
    events += [wire(ev) for ev in stream]
    check_events(events, first=2, complete=False)
    deltas = [ev["delta"] for ev in events if ev["type"] == "response.output_text.delta"]
    assert 3 <= len(deltas) < 80, "the cancel must stop the run on the other worker before it finished"
    assert sdk(a).responses.retrieve(r.id).status == "cancelled"
    for c in (*clients.values(), b2):
        c.close()


def test_each_worker_holds_leases_under_its_own_instance_id(pair, script, served: ServerProcess,
                                                            database: str | None) -> None:
    a, b = pair
    script.add({"content": SLOW, "delay": 0.05}, {"content": SLOW, "delay": 0.05})
    runs = [a.responses.create(model="m", input="one", background=True),
            b.responses.create(model="m", input="two", background=True)]
    try:
        owners = lease_owners(served, database, [r.id for r in runs])
        assert len(owners) == 2 and None not in owners.values()
        assert owners[runs[0].id] != owners[runs[1].id]
    finally:
        for r in runs:
            b.responses.cancel(r.id)


def test_a_worker_that_dies_is_replaced_and_its_run_ended(database: str | None, engine: ScriptedEngine, script,
                                                          tmp_path: Path) -> None:
    server = start_workers(tmp_path, database, engine)
    try:
        clients = one_per_worker(server)
        # Worker 0: the supervisor waited for it to be ready at start, unlike the others.
        doomed = int(re.findall(r"worker 0 started \(pid (\d+)\)", server.log())[0])
        on_doomed = clients[doomed]
        (other,) = (c for pid, c in clients.items() if pid != doomed)
        script.add({"match": "long job", "content": SLOW, "delay": 0.05},
                   {"match": "other job", "content": SLOW, "delay": 0.08})
        r = sdk(on_doomed).responses.create(model="m", input="long job", background=True)
        # A run of the other worker, which the new worker 0 must leave alone (it is not the first
        # process on the database: what runs there is not an orphan).
        kept = sdk(other).responses.create(model="m", input="other job", background=True)
        # (Leaving a stream early closes its connection: the next request may go to either worker.)
        with sdk(other).responses.retrieve(r.id, stream=True) as stream:
            first = read_until(stream, lambda ev: ev["type"] == "response.output_text.delta")
        os.kill(doomed, signal.SIGKILL)
        wait_for(lambda: doomed not in workers_of(server))
        # Another worker takes the run over once its lease (2 s) has expired, and ends it failed.
        # (A new connection: the stream left above took the survivor's with it.)
        resumed = read_until(OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0).responses.retrieve(
            r.id, stream=True, starting_after=first[-1]["sequence_number"]), lambda ev: ev["type"] == "response.failed")
        check_events(first + resumed)
        assert "interrupted" in resumed[-1]["response"]["error"]["message"]
        # The supervisor started a new worker in its place, which serves.
        wait_for(lambda: len(workers_of(server)) == 2 and doomed not in workers_of(server), timeout=20)
        wait_for(lambda: server.log().count("responsa ready on") == 3, timeout=20)
        assert "died" in server.log()
        done = wait_for(lambda: (got := sdk(other).responses.retrieve(kept.id)).status != "in_progress" and got,
                        timeout=30)
        assert done.status == "completed" and done.output_text == SLOW, done.error
        for client in one_per_worker(server).values():
            script.add({"content": "still here"})
            assert sdk(client).responses.create(model="m", input="hi").output_text == "still here"
            client.close()
    finally:
        for c in clients.values():
            c.close()
        server.stop()
    assert server.proc is not None and server.proc.returncode == 0


def test_stopping_the_server_stops_every_worker(database: str | None, engine: ScriptedEngine, tmp_path: Path) -> None:
    server = start_workers(tmp_path, database, engine)
    workers = workers_of(server)
    started = time.monotonic()
    server.stop()
    assert server.proc is not None and server.proc.returncode == 0
    assert time.monotonic() - started < 10
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert "Traceback" not in server.log()


def test_a_worker_that_cannot_start_stops_the_server(engine: ScriptedEngine, tmp_path: Path) -> None:
    """(PostgreSQL unreachable: the first worker fails while it starts.)"""
    server = ServerProcess(tmp_path, "--workers", "2", "--database-url", "postgresql://u@127.0.0.1:9/none",
                           "--upstream-base-url", engine.base_url, "--api-key", KEY_A)
    with pytest.raises(RuntimeError, match="server exited with 3"):
        server.start(timeout=60)
    assert "cannot connect to PostgreSQL at 127.0.0.1:9/none" in server.log()
    assert "could not start" in server.log()


def test_each_worker_keeps_its_own_unsaved_responses_and_worker_0_takes_the_rest(tmp_path: Path) -> None:
    from responsa.app import unsaved_files

    for name in ("unsaved-responses.jsonl", "unsaved-responses-0.jsonl", "unsaved-responses-1.jsonl",
                 "unsaved-responses-3.jsonl", "unsaved-responses.jsonl.tmp"):
        (tmp_path / name).write_text("")
    d = str(tmp_path)

    def names(paths: list[str]) -> list[str]:
        return [Path(p).name for p in paths]

    own, rest = unsaved_files(d, None, 1)  # a single server takes every worker's
    assert Path(own).name == "unsaved-responses.jsonl"
    assert names(rest) == ["unsaved-responses-0.jsonl", "unsaved-responses-1.jsonl", "unsaved-responses-3.jsonl"]
    own, rest = unsaved_files(d, 0, 2)  # worker 0 takes what no running worker owns
    assert Path(own).name == "unsaved-responses-0.jsonl"
    assert names(rest) == ["unsaved-responses-3.jsonl", "unsaved-responses.jsonl"]
    own, rest = unsaved_files(d, 1, 2)
    assert Path(own).name == "unsaved-responses-1.jsonl" and rest == []
