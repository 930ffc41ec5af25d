"""Background mode: polling, cancel, resumable streams, the run cap, and restarts (issue 4)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, check_events, check_response, types_of, wait_for, wire
from openai import OpenAI

TERMINAL = ("completed", "failed", "incomplete", "cancelled")


def poll(client: OpenAI, rid: str, timeout: float = 20) -> object:
    """The seed's polling loop."""
    deadline = time.monotonic() + timeout
    resp = client.responses.retrieve(rid)
    seen = [resp.status]
    while resp.status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"still {resp.status}"
        time.sleep(0.05)
        resp = client.responses.retrieve(rid)
        if resp.status != seen[-1]:
            seen.append(resp.status)
    resp.seen = seen  # type: ignore[attr-defined]
    return resp


def test_polling_loop(client: OpenAI, script) -> None:
    script.add({"content": "done in the background", "first_delay": 1.0, "delay": 0.05})
    r = client.responses.create(model="m", input="x", background=True)
    check_response(r)
    # Queued and empty: it answered before the engine (which waits 1 s before its first word).
    assert r.status == "queued" and r.background is True and r.output == []
    final = poll(client, r.id)
    assert final.status == "completed" and final.output_text == "done in the background"
    assert set(final.seen) <= {"queued", "in_progress", "completed"} and final.seen[-1] == "completed"
    check_response(final)


def test_cancel_twice_keeps_partial_output(client: OpenAI, script) -> None:
    script.add({"content": " ".join(f"w{i}" for i in range(400)), "delay": 0.02})
    r = client.responses.create(model="m", input="x", background=True)
    wait_for(lambda: client.responses.retrieve(r.id).status == "in_progress", timeout=10)
    time.sleep(0.3)  # let some words through; nothing to await: the engine is meant to be mid-answer
    first = client.responses.cancel(r.id)
    check_response(first)
    assert first.status == "cancelled"
    second = client.responses.cancel(r.id)
    assert second.model_dump() == first.model_dump()
    wait_for(lambda: script.aborted == 1, timeout=10)
    stored = client.responses.retrieve(r.id)
    assert stored.status == "cancelled"
    text = stored.output[0].content[0].text
    assert text.startswith("w0 w1") and len(text.split()) < 400
    assert stored.output[0].status == "incomplete"


def test_cancel_of_completed_background_returns_it_unchanged(client: OpenAI, script) -> None:
    r = client.responses.create(model="m", input="quick", background=True)
    final = poll(client, r.id)
    assert client.responses.cancel(r.id).model_dump() == client.responses.retrieve(r.id).model_dump()
    assert final.status == "completed"


def test_cancel_by_another_key_is_404(client: OpenAI, other_client: OpenAI, script) -> None:
    script.add({"content": "slow", "first_delay": 1})
    r = client.responses.create(model="m", input="x", background=True)
    with pytest.raises(openai.NotFoundError):
        other_client.responses.cancel(r.id)
    with pytest.raises(openai.NotFoundError):
        other_client.responses.retrieve(r.id, stream=True)
    assert poll(client, r.id).status == "completed"


def test_background_stream_then_resume_mid_run_and_after(client: OpenAI, script) -> None:
    script.add({"content": " ".join(f"t{i}" for i in range(30)), "delay": 0.05})
    stream = client.responses.create(model="m", input="x", background=True, stream=True)
    it = iter(stream)
    head = [next(it) for _ in range(6)]
    stream.close()
    assert types_of(head[:3]) == ["response.created", "response.queued", "response.in_progress"]
    assert head[0].response.status == "queued"
    rid = head[0].response.id
    last_seen = head[-1].sequence_number
    # Resume mid-run from the last event seen: no gap, no duplicate.
    resumed = [wire(e) for e in client.responses.retrieve(rid, stream=True, starting_after=last_seen)]
    assert resumed[0]["sequence_number"] == last_seen + 1
    check_events([wire(e) for e in head] + resumed)
    assert resumed[-1]["type"] == "response.completed"
    # After completion: the whole stream again, and any tail of it.
    full = [wire(e) for e in client.responses.retrieve(rid, stream=True)]
    check_events(full)
    assert full == [wire(e) for e in head] + resumed
    tail = [wire(e) for e in client.responses.retrieve(rid, stream=True, starting_after=len(full) - 3)]
    assert tail == full[-2:]
    # The stream helper replays from the start and filters on the client.
    with client.responses.stream(response_id=rid, starting_after=10) as helper:
        helper_events = list(helper)
        final = helper.get_final_response()
    assert helper_events[0].sequence_number == 11
    assert final.output_text == " ".join(f"t{i}" for i in range(30))


def test_replay_of_non_background_response_is_400(client: OpenAI) -> None:
    r = client.responses.create(model="m", input="x")
    with pytest.raises(openai.BadRequestError) as e:
        list(client.responses.retrieve(r.id, stream=True))
    assert e.value.body["param"] == "stream"


@pytest.fixture(scope="module")
def capped_server(engine: ScriptedEngine, tmp_path_factory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("capped"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--max-background-runs", "1")
    proc.start()
    yield proc
    proc.stop()


def test_runs_past_the_cap_wait_queued(capped_server, script) -> None:
    client = OpenAI(base_url=capped_server.base_url, api_key=KEY_A, max_retries=0)
    script.add({"content": "first", "first_delay": 1.0}, {"content": "second"})
    a = client.responses.create(model="m", input="a", background=True)
    wait_for(lambda: client.responses.retrieve(a.id).status == "in_progress", timeout=10)
    b = client.responses.create(model="m", input="b", background=True)
    time.sleep(0.3)
    assert client.responses.retrieve(b.id).status == "queued"
    assert client.responses.retrieve(a.id).status == "in_progress"
    assert poll(client, a.id).status == "completed"
    assert poll(client, b.id).output_text == "second"


def test_restart_mid_run_ends_in_a_terminal_status(engine: ScriptedEngine, script, tmp_path) -> None:
    proc = ServerProcess(tmp_path / "restart", "--upstream-base-url", engine.base_url, "--api-key", KEY_A)
    proc.start()
    try:
        client = OpenAI(base_url=proc.base_url, api_key=KEY_A, max_retries=0)
        script.add({"content": " ".join(f"r{i}" for i in range(300)), "delay": 0.03})
        stream = client.responses.create(model="m", input="x", background=True, stream=True)
        it = iter(stream)
        head = [wire(next(it)) for _ in range(8)]
        rid = head[0]["response"]["id"]
        proc.kill()  # SIGKILL: no shutdown code runs
        stream.close()
        proc.start()
        final = poll(client, rid, timeout=30)
        assert final.status in TERMINAL
        assert final.status == "failed" and final.error.code == "server_error"
        assert "interrupted" in final.error.message
        resumed = [wire(e) for e in client.responses.retrieve(rid, stream=True, starting_after=7)]
        assert resumed[-1]["type"] == "response.failed"
        full = [wire(e) for e in client.responses.retrieve(rid, stream=True)]
        check_events(full)
        assert full[:8] == head
    finally:
        proc.stop()


def test_queued_run_is_resumed_after_restart(engine: ScriptedEngine, script, tmp_path) -> None:
    proc = ServerProcess(tmp_path / "resume", "--upstream-base-url", engine.base_url, "--api-key", KEY_A,
                         "--max-background-runs", "1")
    proc.start()
    try:
        client = OpenAI(base_url=proc.base_url, api_key=KEY_A, max_retries=0)
        script.add({"hang": True})
        blocker = client.responses.create(model="m", input="blocker", background=True)
        wait_for(lambda: client.responses.retrieve(blocker.id).status == "in_progress", timeout=10)
        waiting = client.responses.create(model="m", input="waiting one", background=True)
        assert client.responses.retrieve(waiting.id).status == "queued"
        proc.kill()
        proc.start()
        assert poll(client, blocker.id, timeout=30).status == "failed"
        resumed = poll(client, waiting.id, timeout=30)
        assert resumed.status == "completed" and resumed.output_text == "Echo: waiting one"
        events = [wire(e) for e in client.responses.retrieve(waiting.id, stream=True)]
        check_events(events)
        assert types_of(events)[:3] == ["response.created", "response.queued", "response.in_progress"]
    finally:
        proc.stop()


def test_background_raw_stream_frames(server, script) -> None:
    script.add({"content": "framed"})
    with httpx.stream("POST", server.base_url + "/responses", headers={"Authorization": f"Bearer {KEY_A}"},
                      json={"model": "m", "input": "x", "background": True, "stream": True}, timeout=30) as resp:
        body = resp.read().decode()
    from harness import sse_events

    events = sse_events(body)
    check_events(events)
    assert events[0]["response"]["status"] == "queued"


# ---- background with store=false -----------------------------------------------------------------

@pytest.fixture(scope="module")
def short_window_server(engine: ScriptedEngine, tmp_path_factory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("unstored"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--unstored-background-window", "1")
    proc.start()
    yield proc
    proc.stop()


def test_background_without_store_runs_and_can_be_polled_and_resumed(client: OpenAI, script) -> None:
    script.add({"content": "kept for a while", "first_delay": 0.5})
    r = client.responses.create(model="m", input="secret question", background=True, store=False)
    check_response(r)
    assert r.status == "queued" and r.store is False and r.background is True
    final = poll(client, r.id)
    assert final.status == "completed" and final.output_text == "kept for a while" and final.store is False
    events = [wire(e) for e in client.responses.retrieve(r.id, stream=True)]
    check_events(events)
    assert events[-1]["type"] == "response.completed"
    # Never chained from, never a source of items, never listed.
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="m", input="more", previous_response_id=r.id)
    assert e.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input=[{"type": "item_reference", "id": final.output[0].id}])
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(r.id)


def test_background_stream_without_store(client: OpenAI, script) -> None:
    script.add({"content": "streamed and gone", "delay": 0.02})
    with client.responses.stream(model="m", input="x", background=True, store=False) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_events(events)
    assert final.output_text == "streamed and gone" and final.store is False
    assert client.responses.cancel(final.id).status == "completed"  # a background response like any other


def test_background_without_store_is_removed_after_its_window(short_window_server, script) -> None:
    client = OpenAI(base_url=short_window_server.base_url, api_key=KEY_A, max_retries=0)
    script.add({"content": "soon gone"}, {"content": "stays"})
    gone = client.responses.create(model="m", input="x", background=True, store=False)
    stays = client.responses.create(model="m", input="y", background=True)
    assert poll(client, gone.id).output_text == "soon gone"
    assert poll(client, stays.id).status == "completed"

    def removed() -> bool:
        try:
            client.responses.retrieve(gone.id)
        except openai.NotFoundError:
            return True
        return False

    wait_for(removed, timeout=15, interval=0.2)
    with pytest.raises(openai.NotFoundError):
        list(client.responses.retrieve(gone.id, stream=True))

    def rows(rid: str) -> int:
        with sqlite3.connect(short_window_server.data_dir / "responsa.db") as db:
            return sum(db.execute(f"SELECT count(*) FROM {table} WHERE {key} = ?", (rid,)).fetchone()[0]
                       for table, key in (("responses", "id"), ("items", "response_id"), ("events", "response_id")))

    wait_for(lambda: rows(gone.id) == 0, timeout=20, interval=0.2)  # removed, not only hidden
    assert rows(stays.id) > 0
    assert client.responses.retrieve(stays.id).status == "completed"  # stored responses keep their retention
