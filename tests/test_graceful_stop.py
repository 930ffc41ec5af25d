"""SIGTERM during live streams and background runs, two replicas on one PostgreSQL.

Replica A is stopped while it streams a response, runs one background response and holds
another queued; replica B follows A's run and takes over what A hands back. Leases are long
(30 s), so anything B takes before then was handed over by A's drain, not found by expiry.
Skips when PostgreSQL is unreachable (CI makes that a failure).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pg
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, check_events, check_response, wait_for, wire
from openai import OpenAI


def words(prefix: str, n: int) -> str:
    return " ".join(f"{prefix}{i}" for i in range(n))


@pytest.fixture
def database() -> Iterator[str]:
    url = pg.create_database("responsa_drain")
    yield url
    pg.drop_database(url)


def replica(tmp: Path, name: str, url: str, engine: ScriptedEngine, *extra: str) -> ServerProcess:
    return ServerProcess(tmp / name, "--database-url", url, "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--lease-duration", "30", "--keepalive-interval", "1",
                         "--database-pool-size", "4", *extra)


def sdk(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)


class Reader(threading.Thread):
    """Reads an SDK stream to its end in the background, noting when each event came."""

    def __init__(self, open_stream: Any) -> None:
        super().__init__(daemon=True)
        self.open_stream = open_stream
        self.events: list[dict] = []
        self.times: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.open_stream() as stream:
                for ev in stream:
                    self.events.append(wire(ev))
                    self.times.append(time.monotonic())
        except BaseException as e:  # reported by the test
            self.error = e

    def deltas(self) -> int:
        return sum(1 for ev in self.events if ev["type"] == "response.output_text.delta")


def stopped_cleanly(server: ServerProcess) -> bool:
    """Exited after its whole shutdown (uvicorn re-raises the signal it stopped on, as the status)."""
    assert server.proc is not None
    return server.proc.wait(timeout=30) in (0, -signal.SIGTERM) and "Application shutdown complete" in server.log()


def unfinished(url: str) -> list:
    return pg.admin_on(url, "SELECT id, status FROM responses WHERE status IN ('queued', 'in_progress')")


def test_sigterm_lets_streams_and_runs_finish_and_hands_over_queued_runs(
        database: str, engine: ScriptedEngine, script, tmp_path: Path) -> None:
    a = replica(tmp_path, "a", database, engine, "--max-background-runs", "1", "--drain-timeout", "30")
    b = replica(tmp_path, "b", database, engine)
    a.start()
    b.start()
    try:
        # 80 chunks 0.05 s apart: 4 s, long enough that A is still busy when it is signalled.
        script.add({"match": "stream", "content": words("s", 80), "delay": 0.05},
                   {"match": "first run", "content": words("r", 80), "delay": 0.05},
                   {"match": "queued run", "content": "taken over by B"})
        stream = Reader(lambda: sdk(a).responses.create(model="m", input="stream", stream=True))
        stream.start()
        first = sdk(a).responses.create(model="m", input="first run", background=True)
        queued = sdk(a).responses.create(model="m", input="queued run", background=True)
        follower = Reader(lambda: sdk(b).responses.retrieve(first.id, stream=True))
        follower.start()
        wait_for(lambda: stream.deltas() >= 1 and follower.deltas() >= 1)
        assert sdk(b).responses.retrieve(queued.id).status == "queued"  # waiting for A's only slot

        assert a.proc is not None
        a.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "released 1 queued background runs" in a.log())
        with pytest.raises(httpx.ConnectError):  # A accepts no new connection
            httpx.get(a.url + "/health")
        # B starts the queued run at once: told by A, long before A's 30 s lease could expire.
        done = wait_for(lambda: (r := sdk(b).responses.retrieve(queued.id)).status == "completed" and r,
                        timeout=15)
        check_response(done)
        assert done.output_text == "taken over by B"
        assert "taking over runs another replica released" in b.log()

        # The stream and the running background run went on to their natural ends.
        stream.join(timeout=30)
        follower.join(timeout=30)
        assert stream.error is None and follower.error is None
        check_events(stream.events)
        assert stream.events[-1]["type"] == "response.completed" and stream.deltas() == 80
        check_events(follower.events)
        assert follower.events[-1]["type"] == "response.completed" and follower.deltas() == 80
        assert stopped_cleanly(a)
        got = sdk(b).responses.retrieve(first.id)
        assert got.status == "completed" and got.output_text == words("r", 80)
        assert sdk(b).responses.retrieve(stream.events[0]["response"]["id"]).status == "completed"
        assert unfinished(database) == []
        assert "Traceback" not in a.log()
    finally:
        a.stop()
        b.stop()


def test_at_the_drain_deadline_what_still_runs_ends_failed_and_stored(
        database: str, engine: ScriptedEngine, script, tmp_path: Path) -> None:
    a = replica(tmp_path, "a", database, engine, "--drain-timeout", "2")
    b = replica(tmp_path, "b", database, engine)
    a.start()
    b.start()
    try:
        # 200 chunks 0.05 s apart: 10 s, far past the 2 s deadline.
        script.add({"match": "stream", "content": words("s", 200), "delay": 0.05},
                   {"match": "run", "content": words("r", 200), "delay": 0.05})
        stream = Reader(lambda: sdk(a).responses.create(model="m", input="stream", stream=True))
        stream.start()
        run = sdk(a).responses.create(model="m", input="run", background=True)
        follower = Reader(lambda: sdk(b).responses.retrieve(run.id, stream=True))
        follower.start()
        wait_for(lambda: stream.deltas() >= 1 and follower.deltas() >= 1)

        assert a.proc is not None
        signalled = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        stream.join(timeout=30)
        follower.join(timeout=30)
        assert stream.error is None and follower.error is None
        assert stopped_cleanly(a)

        # Not cut before the deadline: deltas kept coming after the signal, and the end came
        # no earlier than 2 s after it, as response.failed saying why.
        for reader in (stream, follower):
            last = reader.events[-1]
            assert last["type"] == "response.failed", last["type"]
            assert reader.times[-1] - signalled >= 2.0
            assert sum(1 for t in reader.times if t > signalled + 1.0) > 5
            check_events(reader.events, complete=False)
        error = stream.events[-1]["response"]["error"]
        assert error["code"] == "server_error" and "was stopped" in error["message"]
        assert "interrupted" in follower.events[-1]["response"]["error"]["message"]

        # Both are stored failed, with what their clients saw; nothing is left in progress.
        for rid, reader in ((stream.events[0]["response"]["id"], stream), (run.id, follower)):
            got = sdk(b).responses.retrieve(rid)
            check_response(got)
            assert got.status == "failed"
            streamed = "".join(ev["delta"] for ev in reader.events if ev["type"] == "response.output_text.delta")
            assert got.output[0].content[0].text == streamed
        assert unfinished(database) == []
        # A resumed stream of the run replays the same end.
        again = [wire(ev) for ev in sdk(b).responses.retrieve(run.id, stream=True)]
        assert again[-1] == follower.events[-1]
    finally:
        a.stop()
        b.stop()
