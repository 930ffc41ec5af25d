"""Several `responsa serve` replicas on one PostgreSQL, driven through the official SDK.

Replicas A and B share a throwaway database and the scripted engine. Leases are 2 seconds
(`--lease-duration 2`) so that a replica's death is noticed quickly. Skips when PostgreSQL
is unreachable (CI makes that a failure).
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pg
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, check_events, check_response, wait_for, wire
from openai import OpenAI

from responsa.store.schema import LATEST

LEASE = "2"
SLOW = " ".join(f"w{n}" for n in range(80))  # 80 chunks, 0.05 s apart: 4 s of streaming


def start_all(*servers: ServerProcess) -> None:
    """Start servers at the same moment (their migrations race for the advisory lock)."""
    errors: list[BaseException] = []

    def start(s: ServerProcess) -> None:
        try:
            s.start()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def replica(tmp: Path, name: str, url: str, engine: ScriptedEngine, *extra: str) -> ServerProcess:
    return ServerProcess(tmp / name, "--database-url", url, "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--lease-duration", LEASE, "--keepalive-interval", "1",
                         "--database-pool-size", "4", *extra)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    url = pg.create_database("responsa_replicas")
    yield url
    pg.drop_database(url)


@pytest.fixture(scope="module")
def pair(database: str, engine: ScriptedEngine,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("replicas")
    a, b = replica(tmp, "a", database, engine), replica(tmp, "b", database, engine)
    try:
        start_all(a, b)
        yield a, b
    finally:
        a.stop()
        b.stop()


def sdk(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)


def read_until(stream: Any, stop: Any) -> list[dict]:
    """Events of an SDK stream, up to and including the first one for which `stop` holds."""
    events = []
    for ev in stream:
        events.append(wire(ev))
        if stop(events[-1]):
            break
    return events


def test_replicas_migrate_once_at_the_same_time(pair, database: str) -> None:
    rows = pg.admin_on(database, "SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, LATEST + 1))


def test_migrate_command(tmp_path: Path) -> None:
    url = pg.create_database("responsa_migrate")
    try:
        cmd = [sys.executable, "-m", "responsa", "migrate", "--database-url", url]
        for _ in range(2):  # the second run finds nothing to do
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=_clean_env())
            assert done.returncode == 0, done.stderr
            assert "schema up to date" in done.stdout
        rows = pg.admin_on(url, "SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, LATEST + 1))
        assert pg.admin_on(url, "SELECT to_regclass('responses') IS NOT NULL")[0][0]
    finally:
        pg.drop_database(url)
    # Nothing listens on port 9: one clear line, exit status 1, no password shown.
    bad = [sys.executable, "-m", "responsa", "migrate", "--database-url", "postgresql://u:hunter2@127.0.0.1:9/x"]
    done = subprocess.run(bad, capture_output=True, text=True, timeout=60, env=_clean_env())
    assert done.returncode == 1
    assert "migration failed: cannot connect to PostgreSQL at 127.0.0.1:9/x" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("RESPONSA_")}


def test_any_replica_serves_any_response(pair, script) -> None:
    a, b = pair
    script.add({"content": "stored on A"})
    r = sdk(a).responses.create(model="m", input="hello")
    got = sdk(b).responses.retrieve(r.id)
    check_response(got)
    assert got.output_text == "stored on A"
    script.add({"content": "continued on B"})
    r2 = sdk(b).responses.create(model="m", input="more", previous_response_id=r.id)
    assert r2.output_text == "continued on B"
    assert script.requests[-1]["messages"][:2] == [{"role": "user", "content": "hello"},
                                                    {"role": "assistant", "content": "stored on A"}]
    assert [i.id for i in sdk(a).responses.input_items.list(r2.id).data] == \
        [i.id for i in sdk(b).responses.input_items.list(r2.id).data]
    sdk(b).responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        sdk(a).responses.retrieve(r.id)


def test_run_on_a_followed_and_cancelled_through_b(pair, script) -> None:
    a, b = pair
    script.add({"content": SLOW, "delay": 0.05})
    r = sdk(a).responses.create(model="m", input="write a lot", background=True)
    assert r.status == "queued"
    # Resumed on B after the first two stored events, following A's live events.
    stream = sdk(b).responses.retrieve(r.id, stream=True, starting_after=1)
    events = read_until(stream, lambda ev: ev["type"] == "response.output_text.delta" and
                        ev["delta"].strip() == "w2")
    assert events[0]["sequence_number"] == 2
    cancelled = sdk(b).responses.cancel(r.id)
    check_response(cancelled)
    assert cancelled.status == "cancelled"
    events += [wire(ev) for ev in stream]  # the stream ends once the run has stopped
    check_events(events, first=2, complete=False)
    deltas = [ev["delta"] for ev in events if ev["type"] == "response.output_text.delta"]
    assert 3 <= len(deltas) < 80, "the cancel must stop the run on A before it finished"
    on_a = sdk(a).responses.retrieve(r.id)
    assert on_a.status == "cancelled"
    assert on_a.output[0].content[0].text.startswith("w0 w1 w2")


def test_run_on_a_deleted_through_b_stays_deleted_everywhere(pair, script) -> None:
    a, b = pair
    script.add({"content": SLOW, "delay": 0.05})
    r = sdk(a).responses.create(model="m", input="write a lot", background=True)
    wait_for(lambda: sdk(b).responses.retrieve(r.id).status == "in_progress")
    sdk(b).responses.delete(r.id)
    wait_for(lambda: script.aborted == 1)  # B told A, and A stopped the engine
    # A's last writes (its end, its events) find the response gone and leave it so.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        for server in (a, b):
            with pytest.raises(openai.NotFoundError):
                sdk(server).responses.retrieve(r.id)
        time.sleep(0.1)
    resp = httpx.get(f"{a.base_url}/responses/{r.id}", params={"stream": "true"},
                     headers={"Authorization": f"Bearer {KEY_A}"})
    assert resp.status_code == 404


def test_a_killed_mid_run_b_fails_it(database: str, pair, engine: ScriptedEngine, script,
                                     tmp_path: Path) -> None:
    _, b = pair
    a = replica(tmp_path, "doomed", database, engine)
    a.start()
    try:
        script.add({"content": SLOW, "delay": 0.05})
        r = sdk(a).responses.create(model="m", input="long job", background=True)
        with sdk(b).responses.retrieve(r.id, stream=True) as stream:
            first = read_until(stream, lambda ev: ev["type"] == "response.output_text.delta")
        a.kill()
        # A resumed stream on B waits for the lease to expire, then sees B end the run.
        resumed = read_until(sdk(b).responses.retrieve(r.id, stream=True,
                                                       starting_after=first[-1]["sequence_number"]),
                             lambda ev: ev["type"] == "response.failed")
        events = first + resumed
        check_events(events)
        assert events[-1]["type"] == "response.failed"
        error = events[-1]["response"]["error"]
        assert error["code"] == "server_error" and "interrupted" in error["message"]
        got = sdk(b).responses.retrieve(r.id)
        check_response(got)
        assert got.status == "failed" and got.output[0].status == "incomplete"
        streamed = "".join(ev["delta"] for ev in events if ev["type"] == "response.output_text.delta")
        assert streamed and got.output[0].content[0].text == streamed  # what followers saw is kept
        # A stream resumed later replays the end.
        again = [wire(ev) for ev in sdk(b).responses.retrieve(r.id, stream=True,
                                                             starting_after=first[-1]["sequence_number"])]
        assert again == resumed
    finally:
        a.kill()


def test_a_killed_with_a_queued_run_b_takes_it_over(database: str, pair, engine: ScriptedEngine, script,
                                                    tmp_path: Path) -> None:
    _, b = pair
    a = replica(tmp_path, "busy", database, engine, "--max-background-runs", "1")
    a.start()
    try:
        script.add({"match": "first", "content": SLOW, "delay": 0.05},
                   {"match": "second", "content": "taken over by B"})
        r1 = sdk(a).responses.create(model="m", input="first job", background=True)
        r2 = sdk(a).responses.create(model="m", input="second job", background=True)
        with sdk(b).responses.retrieve(r1.id, stream=True) as stream:
            read_until(stream, lambda ev: ev["type"] == "response.output_text.delta")
        assert sdk(b).responses.retrieve(r2.id).status == "queued"  # waiting for A's only slot
        a.kill()
        events = read_until(sdk(b).responses.retrieve(r2.id, stream=True),
                            lambda ev: ev["type"] == "response.completed")
        check_events(events)
        done = sdk(b).responses.retrieve(r2.id)
        check_response(done)
        assert done.status == "completed" and done.output_text == "taken over by B"
        assert wait_for(lambda: sdk(b).responses.retrieve(r1.id).status == "failed", timeout=20)
    finally:
        a.kill()


def test_database_outage_gives_503_then_recovers(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    url = pg.create_database("responsa_outage")
    server = replica(tmp_path, "outage", url, engine)
    try:
        server.start()
        client = sdk(server)
        script.add({"match": "hi", "content": "before the outage"}, {"match": "long", "content": SLOW,
                                                                     "delay": 0.05})
        r = client.responses.create(model="m", input="hi")
        run = client.responses.create(model="m", input="long job", background=True)
        with client.responses.retrieve(run.id, stream=True) as stream:
            read_until(stream, lambda ev: ev["type"] == "response.output_text.delta")
        pg.set_outage(url, down=True)
        try:
            # The run cannot store its events: it fails, and waits to store that.
            wait_for(lambda: "retrying a background run's final write" in server.log(), timeout=20)
            for call in (lambda: client.responses.retrieve(r.id),
                         lambda: client.responses.create(model="m", input="during")):
                with pytest.raises(openai.InternalServerError) as e:
                    call()
                assert e.value.status_code == 503
                assert e.value.body["code"] == "service_unavailable"
                assert "database is unavailable" in e.value.body["message"]
            health = httpx.get(server.url + "/health")
            assert health.status_code == 503 and health.json()["database"] is False
            assert server.proc is not None and server.proc.poll() is None
        finally:
            pg.set_outage(url, down=False)
        wait_for(lambda: httpx.get(server.url + "/health").status_code == 200, timeout=20)
        assert client.responses.retrieve(r.id).output_text == "before the outage"
        # The run ended failed once the database was back, with its whole stream stored, gap-free.
        ended = wait_for(lambda: (got := client.responses.retrieve(run.id)).status == "failed" and got,
                         timeout=20)
        check_response(ended)
        assert ended.error.code == "server_error" and "database is unavailable" in ended.error.message
        events = [wire(ev) for ev in client.responses.retrieve(run.id, stream=True)]
        check_events(events)
        assert events[-1]["type"] == "response.failed"
        script.add({"content": "after the outage"})
        assert client.responses.create(model="m", input="again").output_text == "after the outage"
        assert "Traceback" not in server.log()
    finally:
        server.stop()
        pg.drop_database(url)


def test_streams_finished_during_an_outage_are_stored_promptly_and_survive_a_restart(
        engine: ScriptedEngine, script, tmp_path: Path) -> None:
    url = pg.create_database("responsa_outage_streams")
    server = replica(tmp_path, "streams", url, engine)
    try:
        server.start()
        client = sdk(server)

        def stream_through_an_outage(text: str) -> str:
            script.add({"match": text, "content": " ".join(f"{text}{n}" for n in range(20)), "delay": 0.05})
            with client.responses.create(model="m", input=text, stream=True) as stream:
                events = read_until(stream, lambda ev: ev["type"] == "response.output_text.delta")
                pg.set_outage(url, down=True)
                events += [wire(ev) for ev in stream]
            assert events[-1]["type"] == "response.completed"  # the client has its end
            return events[0]["response"]["id"]

        first = stream_through_an_outage("alpha")
        time.sleep(3)  # an outage of a few seconds: the write has been refused several times
        pg.set_outage(url, down=False)
        wait_for(lambda: httpx.get(server.url + "/health").status_code == 200, timeout=20)
        # Stored within a second or so of the database answering again, not after a long backoff.
        got = wait_for(lambda: _completed(client, first), timeout=2.5)
        assert got.output_text.startswith("alpha0 alpha1")

        second = stream_through_an_outage("beta")
        server.stop()  # a clean shutdown while the database is still away
        assert "kept in" in server.log()
        pg.set_outage(url, down=False)
        server.start()
        got = sdk(server).responses.retrieve(second)
        assert got.status == "completed" and got.output_text.startswith("beta0 beta1")
    finally:
        pg.set_outage(url, down=False)
        server.stop()
        pg.drop_database(url)


def _completed(client: OpenAI, rid: str) -> Any:
    try:
        got = client.responses.retrieve(rid)
    except (openai.NotFoundError, openai.InternalServerError):
        return None
    return got if got.status == "completed" else None


def test_the_console_on_b_follows_and_cancels_a_run_on_a(pair, script) -> None:
    """The console's live page reads the events the run stores: it follows a run wherever it runs."""
    a, b = pair
    script.add({"content": SLOW, "delay": 0.05})
    r = sdk(a).responses.create(model="m", input="write a lot", background=True)
    web = httpx.Client(base_url=b.url)
    assert web.post("/console/signin", data={"key": KEY_A}).status_code == 303
    seen: list[dict] = []

    def more() -> bool:
        after = seen[-1]["sequence_number"] if seen else -1
        body = web.get(f"/console/responses/{r.id}/events.json", params={"after": after}).json()
        seen.extend(body["events"])
        return sum(ev["type"] == "response.output_text.delta" for ev in seen) >= 3

    wait_for(more, timeout=20)
    assert [ev["sequence_number"] for ev in seen] == list(range(len(seen)))  # each once, in order
    page = web.get(f"/console/responses/{r.id}").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token is not None and 'id="live"' in page
    assert web.post(f"/console/responses/{r.id}/cancel", data={"csrf": token.group(1)}).status_code == 303
    assert sdk(a).responses.retrieve(r.id).status == "cancelled"
    assert 'id="live"' not in web.get(f"/console/responses/{r.id}").text
