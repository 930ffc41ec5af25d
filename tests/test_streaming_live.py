"""Streams against the live server: disconnects stop the engine, silences get keep-alives."""

from __future__ import annotations

import time

import httpx
import openai
from harness import KEY_A, check_events, sse_events, types_of, wait_for
from openai import OpenAI

AUTH = {"Authorization": f"Bearer {KEY_A}"}


def test_disconnect_stops_the_engine_and_stores_a_terminal_status(server, client: OpenAI, script) -> None:
    script.add({"content": " ".join(f"word{i}" for i in range(200)), "delay": 0.05})
    with httpx.stream("POST", server.base_url + "/responses", headers=AUTH,
                      json={"model": "m", "input": "long please", "stream": True}, timeout=30) as resp:
        lines = resp.iter_lines()
        rid = None
        deltas = 0
        for line in lines:
            if line.startswith("data: ") and '"response.created"' in line:
                rid = line.split('"id":"', 1)[1].split('"', 1)[0]
            if '"response.output_text.delta"' in line:
                deltas += 1
                if deltas == 3:
                    break
    assert rid is not None
    wait_for(lambda: script.aborted == 1, timeout=10)
    stored = wait_for(lambda: (r := client.responses.retrieve(rid)).status != "in_progress" and r, timeout=10)
    assert stored.status == "cancelled"
    assert stored.output[0].status == "incomplete"
    assert stored.output[0].content[0].text.startswith("word0 word1")


def test_keepalive_comments_during_silence(server, script) -> None:
    # The shared server sends a keep-alive after 1 s of silence.
    script.add({"content": "late answer", "first_delay": 2.5})
    started = time.monotonic()
    with httpx.stream("POST", server.base_url + "/responses", headers=AUTH,
                      json={"model": "m", "input": "x", "stream": True}, timeout=30) as resp:
        body = resp.read().decode()
    assert time.monotonic() - started >= 2.5
    assert ": keep-alive\n\n" in body
    events = sse_events(body)
    check_events(events)
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "late answer"


def test_in_progress_while_streaming_then_completed(server, client: OpenAI, script) -> None:
    script.add({"content": "a b c d e f", "delay": 0.3})
    stream = client.responses.create(model="m", input="x", stream=True)
    events = iter(stream)
    first = next(events)
    assert first.type == "response.created"

    def retrievable() -> object:
        try:
            return client.responses.retrieve(first.response.id)
        except openai.NotFoundError:
            return None  # written once the stream has run for 0.1 s

    mid = wait_for(retrievable, timeout=10)
    assert mid.status == "in_progress"
    rest = list(events)
    assert rest[-1].type == "response.completed"
    assert client.responses.retrieve(first.response.id).status == "completed"


def test_reasoning_then_text_stream_order(client: OpenAI, script) -> None:
    script.add({"reasoning": "think think", "content": "answer"})
    events = list(client.responses.create(model="m", input="x", stream=True))
    check_events(events)
    kinds = types_of(events)
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.output_text.delta")
    final = events[-1].response
    assert [o.type for o in final.output] == ["reasoning", "message"]
