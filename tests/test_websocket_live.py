"""The WebSocket transport of /responses, driven by the official SDK's `responses.connect()`
(sync and async) against the live server (issue 17)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, check_events, check_response, wait_for, wire
from openai import AsyncOpenAI, OpenAI
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as raw_connect

END = ("response.completed", "response.failed", "response.incomplete", "error")
TOOLS = [{"type": "function", "name": "step", "description": "Run one step",
          "parameters": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}]


@contextmanager
def connected(client: OpenAI, seconds: float = 60, **kwargs: Any) -> Iterator[Any]:
    """`client.responses.connect()`, closed after `seconds` whatever happens: a test waiting
    for an event that never comes fails instead of hanging."""
    with client.responses.connect(**kwargs) as conn:
        timer = threading.Timer(seconds, conn.close)
        timer.start()
        try:
            yield conn
        finally:
            timer.cancel()


def until_end(conn: Any) -> list[Any]:
    """The events of one response (or one error), up to its terminal event."""
    events = []
    for event in conn:
        events.append(event)
        if event.type in END:
            return events
    raise AssertionError(f"the connection closed after {[e.type for e in events]}")


def response_events(events: list[Any]) -> list[dict]:
    """A response's own events, as sent, without the socket's `stream_id`."""
    out = []
    for e in events:
        data = wire(e)
        data.pop("stream_id", None)
        if not data["type"].startswith("response.steer"):
            out.append(data)
    return out


def finished(events: list[Any]) -> Any:
    assert events[-1].type == "response.completed", wire(events[-1])
    return events[-1].response


def db_bytes(server: ServerProcess) -> bytes:
    return b"".join(p.read_bytes() for p in Path(server.data_dir).glob("responsa.db*"))


# ---- sequential responses, chains, both SDK flavours ---------------------------------------------

def test_sequential_responses_on_one_socket(client: OpenAI, script) -> None:
    script.add({"content": "first answer"}, {"content": "second answer"})
    with connected(client) as conn:
        conn.response.create(model="m", input="one")
        first = until_end(conn)
        conn.response.create(model="m", input="two")
        second = until_end(conn)
    for events in (first, second):
        check_events(response_events(events))
    r1, r2 = finished(first), finished(second)
    assert (r1.output_text, r2.output_text) == ("first answer", "second answer")
    assert r1.id != r2.id and r2.previous_response_id is None
    stored = client.responses.retrieve(r2.id)
    check_response(stored)
    assert stored.output_text == "second answer" and stored.status == "completed"
    assert [m["content"] for m in script.requests[1]["messages"]] == ["two"]


@pytest.mark.anyio
async def test_async_connect_chains_and_streams(server, script) -> None:
    script.add({"content": "async one"}, {"content": "async two"})
    async with AsyncOpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0) as client:
        async with asyncio.timeout(60), client.responses.connect() as conn:
            await conn.response.create(model="m", input="hi")
            events = []
            async for event in conn:
                events.append(event)
                if event.type in END:
                    break
            check_events(response_events(events))
            first = finished(events)
            await conn.response.create(model="m", input="and?", previous_response_id=first.id, store=False)
            events = []
            async for event in conn:
                events.append(event)
                if event.type in END:
                    break
        second = finished(events)
        assert (first.output_text, second.output_text) == ("async one", "async two")
        assert second.previous_response_id == first.id
        assert (await client.responses.retrieve(first.id)).output_text == "async one"
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(second.id)
    assert [m["content"] for m in script.requests[1]["messages"]] == ["hi", "async one", "and?"]


def test_stored_chains_cross_between_socket_and_http(client: OpenAI, script) -> None:
    script.add({"content": "a1"}, {"content": "a2"}, {"content": "a3"})
    with connected(client) as conn:
        conn.response.create(model="m", input="q1")
        r1 = finished(until_end(conn))
        r2 = client.responses.create(model="m", input="q2", previous_response_id=r1.id)  # over HTTP
        conn.response.create(model="m", input="q3", previous_response_id=r2.id)
        r3 = finished(until_end(conn))
    assert [m["content"] for m in script.requests[2]["messages"]] == ["q1", "a1", "q2", "a2", "q3"]
    assert client.responses.retrieve(r3.id).previous_response_id == r2.id
    items = client.responses.input_items.list(r3.id)
    assert [i.content[0].text for i in items.data] == ["q3"]


def test_store_false_continues_on_its_connection_and_never_reaches_the_database(client: OpenAI, server,
                                                                                script) -> None:
    marker = "ephemeral-7f3a"
    script.add({"content": f"{marker} reply"}, {"content": "second"}, {"content": "stored now"})
    with connected(client) as conn:
        conn.response.create(model="m", input=f"{marker} question", store=False)
        r1 = finished(until_end(conn))
        conn.response.create(model="m", input="more", previous_response_id=r1.id, store=False)
        r2 = finished(until_end(conn))
        # A stored response may continue an unstored one on the socket too.
        conn.response.create(model="m", input="keep this", previous_response_id=r2.id)
        r3 = finished(until_end(conn))
    assert [m["content"] for m in script.requests[1]["messages"]] == [f"{marker} question", f"{marker} reply",
                                                                     "more"]
    assert len(script.requests[2]["messages"]) == 5
    for rid in (r1.id, r2.id):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(rid)
        with pytest.raises(openai.NotFoundError):  # nor can HTTP continue it
            client.responses.create(model="m", input="x", previous_response_id=rid)
    assert client.responses.retrieve(r3.id).output_text == "stored now"
    data = db_bytes(server)
    assert marker.encode() not in data and r1.id.encode() not in data


def test_previous_response_not_found_is_an_error_event_and_the_socket_stays_open(client: OpenAI, script) -> None:
    script.add({"content": "still here"})
    with connected(client) as conn:
        conn.response.create(model="m", input="x", previous_response_id="resp_missing")
        (error,) = until_end(conn)
        conn.response.create(model="m", input="again")
        after = finished(until_end(conn))
    assert error.type == "error" and error.status == 404
    assert error.error.code == "previous_response_not_found"
    assert error.error.param == "previous_response_id"
    assert error.error.type == "invalid_request_error" and "resp_missing" in error.error.message
    assert after.output_text == "still here"


@pytest.mark.parametrize("failure", ["invalid request", "engine failure"])
def test_a_failed_continuation_evicts_the_cached_response(client: OpenAI, script, failure: str) -> None:
    script.add({"content": "cached"})
    with connected(client) as conn:
        conn.response.create(model="m", input="x", store=False)
        r1 = finished(until_end(conn))
        if failure == "invalid request":
            conn.response.create(model="m", input="y", previous_response_id=r1.id, store=False,
                                 tool_choice={"type": "function", "name": "nope"})
            (error,) = until_end(conn)
            assert error.status == 400 and error.error.param == "tool_choice"
        else:
            script.add({"status": 500, "error": "engine down"})
            conn.response.create(model="m", input="y", previous_response_id=r1.id, store=False)
            failed = until_end(conn)
            assert failed[-1].type == "response.failed"
        conn.response.create(model="m", input="z", previous_response_id=r1.id, store=False)
        (gone,) = until_end(conn)
    assert gone.error.code == "previous_response_not_found"


def test_reconnect_keeps_stored_chains_but_not_unstored_ones(client: OpenAI, script) -> None:
    script.add({"content": "kept"}, {"content": "lost"}, {"content": "continued"})
    with connected(client) as conn:
        conn.response.create(model="m", input="one")
        stored = finished(until_end(conn))
        conn.response.create(model="m", input="two", store=False)
        unstored = finished(until_end(conn))
    with connected(client) as conn:
        conn.response.create(model="m", input="three", previous_response_id=unstored.id)
        (error,) = until_end(conn)
        conn.response.create(model="m", input="three", previous_response_id=stored.id)
        again = finished(until_end(conn))
    assert error.error.code == "previous_response_not_found"
    assert again.output_text == "continued"
    assert [m["content"] for m in script.requests[-1]["messages"]] == ["one", "kept", "three"]


@pytest.mark.parametrize("store", [False, True])
def test_a_twenty_turn_tool_loop_on_one_socket(client: OpenAI, script, store: bool) -> None:
    turns = 20
    script.add(*[{"tool_calls": [{"name": "step", "arguments": {"n": n}}]} for n in range(turns)],
               {"content": "all steps done"})
    with connected(client) as conn:
        conn.response.create(model="m", input="run the steps", tools=TOOLS, store=store)
        for n in range(turns):
            events = until_end(conn)
            check_events(response_events(events))
            response = finished(events)
            (call,) = [o for o in response.output if o.type == "function_call"]
            assert call.arguments == f'{{"n": {n}}}'
            conn.response.create(model="m", tools=TOOLS, store=store, previous_response_id=response.id,
                                 input=[{"type": "function_call_output", "call_id": call.call_id,
                                         "output": f"step {n} ok"}])
        last = finished(until_end(conn))
    assert last.output_text == "all steps done"
    messages = script.requests[-1]["messages"]
    assert len(messages) == 1 + 2 * turns
    assert [m["content"] for m in messages if m["role"] == "tool"] == [f"step {n} ok" for n in range(turns)]
    if not store:
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(last.id)


# ---- handshake, URL forms, bad events ----------------------------------------------------------

def test_a_bad_key_is_refused_before_the_upgrade(server, script) -> None:
    bad = OpenAI(base_url=server.base_url, api_key="wrong-key", max_retries=0)
    with pytest.raises(InvalidStatus) as refused, bad.responses.connect():
        pass
    assert refused.value.response.status_code == 401
    assert refused.value.response.headers["x-request-id"].startswith("req_")
    error = orjson.loads(refused.value.response.body)["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    with pytest.raises(InvalidStatus) as missing, raw_connect(server.base_url.replace("http", "ws") + "/responses"):
        pass
    assert missing.value.response.status_code == 401
    assert orjson.loads(missing.value.response.body)["error"]["code"] == "missing_api_key"
    assert script.requests == []


def test_both_url_forms(server, script) -> None:
    script.add({"content": "via azure v1"}, {"content": "via /openai"})
    azure = openai.AzureOpenAI(base_url=server.url + "/openai/v1/", api_version="preview", api_key=KEY_A,
                               max_retries=0)
    with connected(azure) as conn:
        conn.response.create(model="deployment", input="hi")
        first = finished(until_end(conn))
    older = OpenAI(base_url=server.url + "/openai", api_key=KEY_A, max_retries=0)
    with connected(older) as conn:
        conn.response.create(model="deployment", input="hi", previous_response_id=first.id)
        second = finished(until_end(conn))
    assert (first.output_text, second.output_text) == ("via azure v1", "via /openai")


def test_bad_events_get_error_events_and_the_socket_stays_open(server, client: OpenAI, script) -> None:
    script.add({"content": "fine"})
    url = server.base_url.replace("http", "ws") + "/responses"
    with raw_connect(url, additional_headers={"Authorization": f"Bearer {KEY_A}"}) as ws:
        ws.send("{not json")
        bad_json = orjson.loads(ws.recv(timeout=30))
        ws.send(orjson.dumps({"type": "response.teleport"}).decode())
        unknown = orjson.loads(ws.recv(timeout=30))
        ws.send(orjson.dumps({"type": "response.create", "model": "m", "input": "x", "temperature": 7}).decode())
        bad_param = orjson.loads(ws.recv(timeout=30))
        ws.send(orjson.dumps({"type": "response.create", "model": "m", "input": "x", "generate": "yes"}).decode())
        bad_generate = orjson.loads(ws.recv(timeout=30))
        ws.send(orjson.dumps({"type": "response.create", "model": "m", "input": "x", "stream": False}).decode())
        streamed = []
        while not streamed or streamed[-1]["type"] != "response.completed":
            streamed.append(orjson.loads(ws.recv(timeout=30)))
    assert bad_json["type"] == "error" and bad_json["error"]["code"] == "invalid_json" and bad_json["status"] == 400
    assert unknown["error"]["param"] == "type"
    assert bad_param["status"] == 400 and bad_param["error"]["param"] == "temperature"
    assert bad_generate["error"]["param"] == "generate"
    check_events(streamed)  # `stream` is implicit over the socket: false changes nothing
    assert streamed[-1]["response"]["output"][0]["content"][0]["text"] == "fine"


# ---- WebSocket-only parameters: generate, stream_id; background ---------------------------------

def test_generate_false_warms_up_without_calling_the_engine(client: OpenAI, script) -> None:
    script.add({"content": "after warm-up"})
    with connected(client) as conn:
        conn.response.create(model="m", input="context for later", tools=TOOLS, generate=False, store=False)
        warm = until_end(conn)
        check_events(response_events(warm))
        warmed = finished(warm)
        assert warmed.output == [] and script.requests == []
        conn.response.create(model="m", input="now answer", tools=TOOLS, previous_response_id=warmed.id)
        answer = finished(until_end(conn))
    assert answer.output_text == "after warm-up"
    assert [m["content"] for m in script.requests[0]["messages"]] == ["context for later", "now answer"]


def test_stream_id_lanes_run_side_by_side_and_each_in_order(client: OpenAI, script) -> None:
    script.add({"match": "alpha", "gate": "alpha", "content": "A1"}, {"match": "again", "content": "A2"},
               {"match": "beta", "content": "B"})
    with connected(client) as conn:
        conn.response.create(model="m", input="alpha", stream_id="a")
        conn.response.create(model="m", input="again", stream_id="a")
        conn.response.create(model="m", input="beta", stream_id="b")
        seen: list[Any] = []
        for event in conn:
            seen.append(event)
            if event.type == "response.completed" and event.stream_id == "b":
                break
        script.release("alpha")
        done_a = 0
        for event in conn:
            seen.append(event)
            if event.type == "response.completed" and event.stream_id == "a":
                done_a += 1
                if done_a == 2:
                    break
    by_lane = {lane: [e for e in seen if e.stream_id == lane] for lane in ("a", "b")}
    assert all(e.stream_id in ("a", "b") for e in seen)
    b_events = response_events(by_lane["b"])
    check_events(b_events)
    assert b_events[-1]["response"]["output"][0]["content"][0]["text"] == "B"
    a_ends = [e for e in by_lane["a"] if e.type == "response.completed"]
    assert [r.response.output_text for r in a_ends] == ["A1", "A2"]
    # The lane ran its two requests in order: the second began after the first ended.
    a_types = [e.type for e in by_lane["a"]]
    assert a_types.index("response.completed") < len(a_types) - 1 - a_types[::-1].index("response.created")
    assert a_types.count("response.created") == 2


def test_another_lane_continuing_a_running_unstored_response_is_told_it_is_in_progress(client: OpenAI,
                                                                                       script) -> None:
    script.add({"match": "slow", "gate": "slow", "content": "slow answer"}, {"content": "forked"})
    with connected(client) as conn:
        conn.response.create(model="m", input="slow", store=False, stream_id="a")
        running = created(conn)
        conn.response.create(model="m", input="fork", store=False, stream_id="b",
                             previous_response_id=running.id)
        early = next(e for e in conn if e.type == "error")
        script.release("slow")
        next(e for e in conn if e.type == "response.completed")
        conn.response.create(model="m", input="fork", store=False, stream_id="b",
                             previous_response_id=running.id)
        fork = finished(until_end(conn))
    assert early.stream_id == "b" and early.error.code == "previous_response_in_progress"
    assert fork.output_text == "forked" and fork.previous_response_id == running.id
    assert [m["content"] for m in script.requests[-1]["messages"]] == ["slow", "slow answer", "fork"]


def test_background_over_the_socket(client: OpenAI, script) -> None:
    script.add({"content": "done in the background"})
    with connected(client) as conn:
        conn.response.create(model="m", input="x", background=True)
        events = until_end(conn)
    check_events(response_events(events))
    assert [e.type for e in events[:3]] == ["response.created", "response.queued", "response.in_progress"]
    final = finished(events)
    assert final.background is True
    assert client.responses.retrieve(final.id).output_text == "done in the background"


def test_a_client_that_disconnects_mid_response_ends_it_as_a_stream_would(client: OpenAI, script) -> None:
    script.add({"content": " ".join(f"word{i}" for i in range(200)), "delay": 0.02})
    with connected(client) as conn:
        conn.response.create(model="m", input="long please")
        rid = None
        deltas = 0
        for event in conn:
            if event.type == "response.created":
                rid = event.response.id
            if event.type == "response.output_text.delta":
                deltas += 1
                if deltas == 3:
                    break
    assert rid is not None
    wait_for(lambda: script.aborted == 1)  # the engine was stopped
    stored = wait_for(lambda: (r := client.responses.retrieve(rid)).status != "in_progress" and r)
    assert stored.status == "cancelled"
    assert stored.output[0].content[0].text.startswith("word0 word1")


def test_a_full_lane_queue_is_refused(client: OpenAI, script) -> None:
    script.add({"match": "hold", "gate": "hold", "content": "held"})
    with connected(client) as conn:
        conn.response.create(model="m", input="hold")
        for event in conn:
            if event.type == "response.created":
                break
        for n in range(17):
            conn.response.create(model="m", input=f"queued {n}")
        refused = next(e for e in conn if e.type == "error")  # the 17th waiting one
        script.release("hold")
        completed = 0
        for event in conn:
            if event.type == "response.completed":
                completed += 1
                if completed == 17:
                    break
    assert refused.status == 429 and refused.error.code == "too_many_queued_requests"


# ---- steering -----------------------------------------------------------------------------------

def created(conn: Any) -> Any:
    for event in conn:
        if event.type == "response.created":
            return event.response
    raise AssertionError("no response.created")


def test_steering_a_running_response_continues_it_with_a_successor(client: OpenAI, script) -> None:
    script.add({"match": "write", "gate": "steer", "content": "draft one"}, {"content": "revised"})
    with connected(client) as conn:
        conn.response.create(model="m", input="write a haiku", store=False, instructions="be brief")
        first = created(conn)
        conn.response.steer(previous_response_id=first.id, input="make it about the sea")
        accepted = next(e for e in conn if e.type.startswith("response.steer"))
        script.release("steer")
        rest = until_end(conn)  # the steered response's end
        successor = until_end(conn)
    assert accepted.type == "response.steer.accepted"
    assert accepted.steer.previous_response_id == first.id and accepted.steer.id.startswith("steer_")
    assert finished(rest).output_text == "draft one"
    check_events(response_events(successor))
    second = finished(successor)
    assert second.previous_response_id == first.id and second.output_text == "revised"
    assert second.instructions == "be brief" and second.store is False  # its settings, inherited
    messages = script.requests[1]["messages"]
    assert [m["content"] for m in messages] == ["be brief", "write a haiku", "draft one", "make it about the sea"]


def test_steering_waits_for_client_tool_output(client: OpenAI, script) -> None:
    script.add({"match": "start", "gate": "tool", "tool_calls": [{"name": "step", "arguments": {"n": 1}}]},
               {"content": "finished with the note"})
    with connected(client) as conn:
        conn.response.create(model="m", input="start", tools=TOOLS)
        first = created(conn)
        conn.response.steer(previous_response_id=first.id, input=[{"type": "message", "role": "user",
                                                                   "content": "also mind the note"}])
        accepted = next(e for e in conn if e.type.startswith("response.steer"))
        script.release("tool")
        done = finished(until_end(conn))
        pending = conn.recv()
        (call,) = [o for o in done.output if o.type == "function_call"]
        conn.response.create(model="m", tools=TOOLS, previous_response_id=first.id,
                             input=[{"type": "function_call_output", "call_id": call.call_id, "output": "ok"}])
        final = finished(until_end(conn))
    assert accepted.type == "response.steer.accepted"
    assert pending.type == "response.steer.pending" and pending.steer.id == accepted.steer.id
    assert pending.reason == "waiting_for_required_input"
    assert [wire(r) for r in pending.required_input] == [
        {"type": "function_call_output", "call_id": call.call_id, "name": "step"}]
    assert final.output_text == "finished with the note"
    tail = [(m["role"], m["content"]) for m in script.requests[1]["messages"][-2:]]
    assert tail == [("tool", "ok"), ("user", "also mind the note")]


def test_steering_refusals(client: OpenAI, script) -> None:
    script.add({"content": "done"})
    with connected(client) as conn:
        conn.response.steer(previous_response_id="resp_unknown", input="hello")
        unknown = conn.recv()
        conn.response.create(model="m", input="x")
        ended = finished(until_end(conn))
        conn.response.steer(previous_response_id=ended.id, input="too late")
        late = conn.recv()
        conn.send({"type": "response.steer", "previous_response_id": ended.id,
                   "input": [{"type": "message", "role": "assistant", "content": "not mine"}]})
        invalid = conn.recv()
    assert unknown.type == "response.steer.failed" and unknown.error.code == "response_not_found"
    assert unknown.steer.input == "hello" and unknown.steer.id is None
    assert late.error.code == "response_already_completed"
    assert invalid.error.code == "invalid_input" and invalid.error.type == "invalid_request_error"


# ---- limits -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def strict_server(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a 1 s idle timeout, a 64 KiB message limit, and streams that wait 2 s for
    the engine to accept before they start."""
    proc = ServerProcess(tmp_path_factory.mktemp("strict"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--websocket-idle-timeout", "1", "--max-body-size", "64k",
                         "--keepalive-interval", "60")
    proc.start()
    yield proc
    proc.stop()


def ws_url(server: ServerProcess) -> str:
    return server.base_url.replace("http", "ws") + "/responses"


def test_an_idle_connection_is_closed_cleanly(strict_server: ServerProcess, script) -> None:
    script.add({"content": "busy is not idle", "delay": 0.4, "chunks": 4})
    with raw_connect(ws_url(strict_server), additional_headers={"Authorization": f"Bearer {KEY_A}"}) as ws:
        # A response running longer than the idle timeout keeps the connection.
        ws.send(orjson.dumps({"type": "response.create", "model": "m", "input": "x"}).decode())
        while orjson.loads(ws.recv(timeout=30))["type"] != "response.completed":
            pass
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "idle timeout")


def test_a_message_over_the_size_limit_closes_with_1009(strict_server: ServerProcess, script) -> None:
    with raw_connect(ws_url(strict_server), additional_headers={"Authorization": f"Bearer {KEY_A}"}) as ws:
        ws.send(orjson.dumps({"type": "response.create", "model": "m", "input": "x" * 100_000}).decode())
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert script.requests == []
    assert httpx.get(strict_server.url + "/health").status_code == 200


def test_a_client_gone_before_the_engine_accepts_ends_the_response(strict_server: ServerProcess, script) -> None:
    script.add({"content": "too late", "first_delay": 3})
    with raw_connect(ws_url(strict_server), additional_headers={"Authorization": f"Bearer {KEY_A}"}) as ws:
        ws.send(orjson.dumps({"type": "response.create", "model": "m", "input": "x",
                              "metadata": {"probe": "gone-early"}}).decode())
        wait_for(lambda: script.requests)  # the engine has it, and has not answered yet

    def stored_status() -> str | None:
        with sqlite3.connect(f"file:{strict_server.data_dir / 'responsa.db'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT status FROM responses WHERE CAST(body AS TEXT) LIKE '%gone-early%'").fetchall()
        return rows[0][0] if rows and rows[0][0] not in ("queued", "in_progress") else None

    # Not run on into a feed nobody reads: stopped, and stored as a disconnected stream is.
    assert wait_for(stored_status, timeout=15) == "cancelled"
