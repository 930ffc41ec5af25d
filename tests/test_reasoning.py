"""Reasoning items, encrypted reasoning that round-trips, and `store: false`, against live servers.

The engine is the scripted Chat Completions engine: its turns carry `reasoning` (sent as
`reasoning_content`, or `reasoning` like Ollama) and `summary` (OpenRouter-style
`reasoning_details`), and it records every request, so the tests see what reached it.
"""

from __future__ import annotations

import asyncio
import base64
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from harness import KEY_A, KEY_B, ScriptedEngine, ServerProcess, _schema, check_events, check_response, wire
from openai import OpenAI

from responsa.backends.chat_completions import default_reasoning_input
from responsa.endpoints import owner_for_key
from responsa.reasoning import ReasoningVault, SealError
from responsa.store.sqlite import SQLiteStore

KEY_1 = "first-reasoning-key-0123456789abcdef"
KEY_2 = "second-reasoning-key-0123456789abcdef"
INCLUDE = ["reasoning.encrypted_content"]
EXEC_TOOL = {"type": "function", "name": "exec_command", "description": "Run a shell command.",
             "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
             "strict": False}


def _config(tmp: Path, engine: ScriptedEngine) -> Path:
    path = tmp / "responsa.toml"
    path.write_text(f"""
[backends.thinker]
base_url = "{engine.base_url}"
reasoning_input = "reasoning_content"

[backends.plain]
base_url = "{engine.base_url}"
reasoning_input = "drop"

[backends.unset]
base_url = "{engine.base_url}"

[models]
"drop-model" = "plain"
"unset-model" = "unset"
"*" = "thinker"
""")
    return path


def _serve(data_dir: Path, engine: ScriptedEngine, *args: str,
           env: dict[str, str] | None = None) -> ServerProcess:
    return ServerProcess(data_dir, "--config", str(_config(data_dir.parent, engine)), "--api-key", KEY_A,
                         "--api-key", KEY_B, *args, env=env).start()


@pytest.fixture(scope="module")
def rserver(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Engine reasoning goes back as `reasoning_content`; "drop-model" drops it; a configured key."""
    proc = _serve(tmp_path_factory.mktemp("reasoning") / "data", engine, "--reasoning-key", KEY_1)
    yield proc
    proc.stop()


@pytest.fixture
def rclient(rserver: ServerProcess, script) -> OpenAI:
    return OpenAI(base_url=rserver.base_url, api_key=KEY_A, max_retries=0)


@pytest.fixture
def rother(rserver: ServerProcess, script) -> OpenAI:
    return OpenAI(base_url=rserver.base_url, api_key=KEY_B, max_retries=0)


def collect(stream: Any) -> list[dict]:
    return [wire(e) for e in stream]


def final(events: list[dict]) -> dict:
    return events[-1]["response"]


def assistant_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "assistant"]


# ---- reasoning items ---------------------------------------------------------------------------

def test_streamed_reasoning_in_canonical_order(rclient: OpenAI, script) -> None:
    script.add({"reasoning": "First I add two and two. It is four.", "content": "Four.",
                "usage": {"prompt_tokens": 11, "completion_tokens": 12, "reasoning_tokens": 9}})
    events = collect(rclient.responses.create(model="thinker-1", input="2+2?", stream=True,
                                              reasoning={"effort": "high"}))
    check_events(events)
    types = [e["type"] for e in events]
    deltas = types.count("response.reasoning_text.delta")
    assert deltas == 9  # one per word
    assert types == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        *["response.reasoning_text.delta"] * deltas,
        "response.reasoning_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed",
    ]
    added = events[2]
    assert added["item"]["type"] == "reasoning"
    assert added["item"]["summary"] == [] and added["item"]["content"] == []
    assert events[3]["part"] == {"type": "reasoning_text", "text": ""}
    text = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert text == "First I add two and two. It is four."
    done_text = next(e for e in events if e["type"] == "response.reasoning_text.done")
    assert done_text["text"] == text and done_text["item_id"] == added["item"]["id"]
    response = final(events)
    reasoning, message = response["output"]
    assert reasoning["id"].startswith("rs_") and reasoning["status"] == "completed"
    assert reasoning["content"] == [{"type": "reasoning_text", "text": text}]
    assert "encrypted_content" not in reasoning  # not asked for
    assert message["content"][0]["text"] == "Four."
    assert response["reasoning"] == {"effort": "high", "summary": None}
    assert response["usage"]["output_tokens_details"]["reasoning_tokens"] == 9
    assert response["usage"]["output_tokens"] == 12
    assert script.requests[-1]["reasoning_effort"] == "high"


def test_non_streamed_reasoning_from_the_reasoning_field(rclient: OpenAI, script) -> None:
    # Ollama and newer vLLM name the field `reasoning`; non-streamed it is on the message.
    script.add({"reasoning": "Quick check.", "reasoning_field": "reasoning", "content": "Yes.",
                "usage": {"reasoning_tokens": 2}})
    r = rclient.responses.create(model="thinker-1", input="ok?", reasoning={"effort": "low"})
    check_response(r)
    assert "stream" not in script.requests[-1]
    assert script.requests[-1]["reasoning_effort"] == "low"
    assert [o.type for o in r.output] == ["reasoning", "message"]
    assert r.output[0].content[0].text == "Quick check."
    assert r.output[0].summary == []
    assert r.output_text == "Yes."
    assert r.usage.output_tokens_details.reasoning_tokens == 2
    got = rclient.responses.retrieve(r.id)
    check_response(got)
    assert got.model_dump() == r.model_dump()


def test_no_effort_no_reasoning_effort_sent(rclient: OpenAI, script) -> None:
    rclient.responses.create(model="thinker-1", input="hi")
    assert "reasoning_effort" not in script.requests[-1]
    rclient.responses.create(model="thinker-1", input="hi", reasoning={"effort": "minimal"})
    assert script.requests[-1]["reasoning_effort"] == "minimal"


def test_summary_passed_through_only_when_the_engine_gives_one(rclient: OpenAI, script) -> None:
    script.add({"summary": "Added the numbers.", "reasoning": "two plus two is four", "content": "4"})
    events = collect(rclient.responses.create(model="thinker-1", input="2+2", stream=True,
                                              reasoning={"effort": "low", "summary": "auto"}))
    check_events(events)
    types = [e["type"] for e in events]
    start = types.index("response.output_item.added")
    assert types[start:start + 12] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.content_part.added", "response.reasoning_text.delta", "response.reasoning_text.delta",
        "response.reasoning_text.delta", "response.reasoning_text.delta",
    ]
    reasoning = final(events)["output"][0]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "Added the numbers."}]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "two plus two is four"}]
    assert final(events)["reasoning"]["summary"] == "auto"

    # Non-streamed, the same; and with no summary from the engine none is invented.
    script.add({"summary": "Said hi.", "content": "hi"}, {"reasoning": "thinking", "content": "hello"})
    r = rclient.responses.create(model="thinker-1", input="a", reasoning={"summary": "detailed"})
    check_response(r)
    assert r.output[0].summary[0].text == "Said hi." and r.output[0].content == []
    r = rclient.responses.create(model="thinker-1", input="b", reasoning={"summary": "detailed"})
    check_response(r)
    assert r.output[0].summary == [] and r.output[0].content[0].text == "thinking"


def test_reasoning_goes_back_through_a_chain_or_is_dropped(rclient: OpenAI, script) -> None:
    script.add({"reasoning": "They want a number.", "content": "7"}, {"content": "8"})
    r1 = rclient.responses.create(model="thinker-1", input="pick one")
    rclient.responses.create(model="thinker-1", input="another", previous_response_id=r1.id)
    assert assistant_messages(script.requests[-1]) == [
        {"role": "assistant", "content": "7", "reasoning_content": "They want a number."}]

    script.add({"reasoning": "Thinking hard.", "content": "9"}, {"content": "10"})
    r1 = rclient.responses.create(model="drop-model", input="pick one")
    rclient.responses.create(model="drop-model", input="another", previous_response_id=r1.id)
    assert assistant_messages(script.requests[-1]) == [{"role": "assistant", "content": "9"}]
    assert "Thinking hard." not in str(script.requests[-1])


def test_a_self_hosted_engine_gets_its_reasoning_back_by_default(rclient: OpenAI, script) -> None:
    """Without `reasoning_input`, an engine on a loopback or private address (vLLM, SGLang,
    llama.cpp) gets `reasoning_content` back (docs/reasoning.md has the measurement)."""
    script.add({"reasoning": "Counting up.", "content": "11"}, {"content": "12"})
    r1 = rclient.responses.create(model="unset-model", input="pick one")
    rclient.responses.create(model="unset-model", input="another", previous_response_id=r1.id)
    assert assistant_messages(script.requests[-1]) == [
        {"role": "assistant", "content": "11", "reasoning_content": "Counting up."}]


@pytest.mark.parametrize(("url", "expected"), [
    ("http://127.0.0.1:8000/v1", "reasoning_content"),
    ("http://localhost:8000/v1", "reasoning_content"),
    ("http://10.1.2.3:8000/v1", "reasoning_content"),
    ("http://[fd00::5]:8000/v1", "reasoning_content"),
    ("http://gpu-1:8000/v1", "reasoning_content"),
    ("http://vllm.inference.svc.cluster.local/v1", "reasoning_content"),
    ("https://api.openai.com/v1", "drop"),
    ("https://my-resource.openai.azure.com/openai/v1", "drop"),
    ("https://api.deepseek.com/v1", "drop"),
    ("https://llm.example.com/v1", "drop"),
    ("http://8.8.8.8/v1", "drop"),
])
def test_default_reasoning_input_by_engine_address(url: str, expected: str) -> None:
    assert default_reasoning_input(url) == expected


def test_reasoning_echoed_by_id_is_looked_up(rclient: OpenAI, rother: OpenAI, script) -> None:
    script.add({"reasoning": "Stored thoughts.",
                "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "ls"}}]})
    r1 = rclient.responses.create(model="thinker-1", input="list files", tools=[EXEC_TOOL])
    rs, call = r1.output
    history = [{"role": "user", "content": "list files"},
               {"type": "reasoning", "id": rs.id, "summary": []},  # LangChain / Agents: id, no content
               call.model_dump(exclude_none=True),
               {"type": "function_call_output", "call_id": call.call_id, "output": "a.txt"}]
    r2 = rclient.responses.create(model="thinker-1", input=history, tools=[EXEC_TOOL])
    check_response(r2)
    assert assistant_messages(script.requests[-1])[0]["reasoning_content"] == "Stored thoughts."

    # As an item_reference (the AI SDK), the same.
    history[1] = {"type": "item_reference", "id": rs.id}
    rclient.responses.create(model="thinker-1", input=history, tools=[EXEC_TOOL])
    assert assistant_messages(script.requests[-1])[0]["reasoning_content"] == "Stored thoughts."

    # Another key cannot read it: the echo carries nothing, so nothing goes to the engine.
    history[1] = {"type": "reasoning", "id": rs.id, "summary": []}
    rother.responses.create(model="thinker-1", input=history, tools=[EXEC_TOOL])
    assert "reasoning_content" not in assistant_messages(script.requests[-1])[0]


# ---- encrypted reasoning ---------------------------------------------------------------------

def test_encrypted_round_trip_over_three_stateless_turns(rclient: OpenAI, script) -> None:
    """Codex over HTTP: store=false, full history each turn, reasoning echoed with content null."""
    script.add(
        {"reasoning": "I should look at the directory first.",
         "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "ls"}, "id": "call_one"}]},
        {"reasoning": "There is a README; read it.",
         "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "cat README"}, "id": "call_two"}]},
        {"reasoning": "The README says hello.", "content": "The project says hello."},
    )
    history: list[dict] = [
        {"type": "message", "role": role, "content": [{"type": "input_text", "text": text}]}
        for role, text in (("developer", "You are Codex."), ("user", "What is this project?"))
    ]
    ids = []
    outputs = {"call_one": "README\nsrc", "call_two": "hello"}
    for turn in range(3):
        events = collect(rclient.responses.create(
            model="gpt-5.5", input=history, tools=[EXEC_TOOL], store=False, stream=True, include=INCLUDE,
            reasoning={"effort": "medium"}, prompt_cache_key="thread-1", parallel_tool_calls=True,
            extra_body={"client_metadata": {"session_id": "s1"}}))
        check_events(events)
        response = final(events)
        assert response["store"] is False
        ids.append(response["id"])
        done = {e["item"]["id"]: e["item"] for e in events if e["type"] == "response.output_item.done"}
        reasoning = response["output"][0]
        assert reasoning["type"] == "reasoning"
        assert reasoning["encrypted_content"] == done[reasoning["id"]]["encrypted_content"]
        added = next(e["item"] for e in events if e["type"] == "response.output_item.added")
        assert "encrypted_content" not in added
        # What the engine saw: every earlier turn's reasoning, decrypted, on its assistant message.
        sent = assistant_messages(script.requests[-1])
        assert [m.get("reasoning_content") for m in sent] == [
            "I should look at the directory first.", "There is a README; read it."][:turn]
        assert script.requests[-1]["reasoning_effort"] == "medium"
        if turn == 2:
            assert response["output"][1]["content"][0]["text"] == "The project says hello."
            break
        call = response["output"][1]
        assert call["type"] == "function_call"
        history += [
            {"type": "reasoning", "id": reasoning["id"], "summary": reasoning["summary"], "content": None,
             "encrypted_content": reasoning["encrypted_content"]},
            {"type": "function_call", "id": call["id"], "status": "completed", "name": call["name"],
             "arguments": call["arguments"], "call_id": call["call_id"]},
            {"type": "function_call_output", "id": f"fco_{uuid.uuid4().hex}", "call_id": call["call_id"],
             "output": outputs[call["call_id"]]},
        ]
    tools = [m for m in script.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tools] == ["README\nsrc", "hello"]
    for rid in ids:  # nothing was stored
        with pytest.raises(openai.NotFoundError):
            rclient.responses.retrieve(rid)
        with pytest.raises(openai.NotFoundError) as e:
            rclient.responses.create(model="gpt-5.5", input="more", previous_response_id=rid)
        assert e.value.body["param"] == "previous_response_id"


def test_encrypted_content_on_non_streamed_and_retrieved_responses(rclient: OpenAI, script) -> None:
    script.add({"reasoning": "Secret plan.", "content": "Done."}, {"content": "ok"})
    r = rclient.responses.create(model="thinker-1", input="go", include=INCLUDE)
    check_response(r)
    token = r.output[0].encrypted_content
    assert token
    plain = rclient.responses.retrieve(r.id)
    check_response(plain)
    assert plain.output[0].encrypted_content is None  # not asked for
    sealed = rclient.responses.retrieve(r.id, include=INCLUDE)
    check_response(sealed)
    assert sealed.output[0].encrypted_content and sealed.output[0].encrypted_content != token  # fresh nonce
    # Both tokens open: fed back with no content, the reasoning reaches the engine.
    for t in (token, sealed.output[0].encrypted_content):
        rclient.responses.create(model="thinker-1", store=False, input=[
            {"role": "user", "content": "go"},
            {"type": "reasoning", "id": r.output[0].id, "summary": [], "encrypted_content": t},
            {"role": "assistant", "content": "Done."}, {"role": "user", "content": "again"}])
        assert assistant_messages(script.requests[-1])[0]["reasoning_content"] == "Secret plan."


def test_encrypted_content_in_background_runs(rclient: OpenAI, script) -> None:
    script.add({"reasoning": "Background thoughts.", "content": "Later."})
    events = collect(rclient.responses.create(model="thinker-1", input="go", background=True, stream=True,
                                              include=INCLUDE))
    check_events(events)
    done = next(e["item"] for e in events if e["type"] == "response.output_item.done")
    assert done["type"] == "reasoning" and done["encrypted_content"] == final(events)["output"][0]["encrypted_content"]
    vault = ReasoningVault(None, keys=[KEY_1], retention=60)  # type: ignore[arg-type]
    assert vault.unseal(done["encrypted_content"], owner_for_key(KEY_A)) == ["Background thoughts."]


def _echo(token: str) -> list[dict]:
    return [{"role": "user", "content": "q"},
            {"type": "reasoning", "id": "rs_echo", "summary": [], "content": None,
             "encrypted_content": token},
            {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}]


def _sealed(client: OpenAI, script) -> str:
    script.add({"reasoning": "Private chain of thought.", "content": "a"})
    r = client.responses.create(model="thinker-1", input="q", store=False, include=INCLUDE)
    return r.output[0].encrypted_content


def _flip(token: str, at: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token))
    raw[at] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).decode()


def test_tampered_foreign_and_expired_ciphertext_rejected(rclient: OpenAI, rother: OpenAI, script) -> None:
    token = _sealed(rclient, script)
    owner = owner_for_key(KEY_A)
    past = ReasoningVault(None, keys=[KEY_1], retention=3600, clock=lambda: time.time() - 7200)  # type: ignore[arg-type]
    stranger = ReasoningVault(None, keys=["a-key-this-server-never-saw-0123456789"], retention=3600)  # type: ignore[arg-type]
    cases = {
        "flipped nonce": (rclient, _flip(token, 0), "altered"),
        "flipped body": (rclient, _flip(token, 20), "altered"),
        "flipped tag": (rclient, _flip(token, -1), "altered"),
        "truncated": (rclient, token[:-8], "altered"),
        "not base64": (rclient, "this is not base64!", "altered"),
        "another server's key": (rclient, stranger.seal(["x"], owner), "altered"),
        "expired": (rclient, past.seal(["x"], owner), "expired"),
        "another API key's": (rother, token, "different API key"),
    }
    calls = len(script.requests)
    for name, (client, bad, words) in cases.items():
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="thinker-1", input=_echo(bad), store=False)
        assert e.value.body["param"] == "input[1].encrypted_content", name
        assert e.value.body["code"] == "invalid_encrypted_content", name
        assert words in e.value.body["message"] and "input[1]" in e.value.body["message"], name
    assert len(script.requests) == calls  # the engine never heard of them
    # Tampering is caught even when the item also carries content in clear; the intact one works.
    with pytest.raises(openai.BadRequestError):
        rclient.responses.create(model="thinker-1", store=False, input=[
            {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": _flip(token, 30),
             "content": [{"type": "reasoning_text", "text": "forged"}]}, {"role": "user", "content": "q"}])
    r = rclient.responses.create(model="thinker-1", input=_echo(token), store=False)
    check_response(r)
    assert assistant_messages(script.requests[-1])[0]["reasoning_content"] == "Private chain of thought."
    # And streamed requests get the same 400 before any stream starts.
    with pytest.raises(openai.BadRequestError):
        rclient.responses.create(model="thinker-1", input=_echo(_flip(token, 5)), store=False, stream=True)


def test_ciphertext_reveals_nothing(rclient: OpenAI, script) -> None:
    script.add(*[{"reasoning": "Private chain of thought.", "content": "a"}] * 2)
    r1 = rclient.responses.create(model="thinker-1", input="q", store=False, include=INCLUDE)
    r2 = rclient.responses.create(model="thinker-1", input="q", store=False, include=INCLUDE)
    t1, t2 = r1.output[0].encrypted_content, r2.output[0].encrypted_content
    assert t1 != t2 and len(t1) == len(t2)  # random nonces; equal plaintext sizes give equal lengths
    raw = base64.urlsafe_b64decode(t1)
    for secret in ("Private", r1.output[0].id, r1.id, owner_for_key(KEY_A)):
        assert secret.encode() not in raw and secret not in t1
    assert str(r1.created_at)[:6].encode() not in raw  # no timestamp in clear
    # A vault with the server's key opens it: nonce(12) || AES-GCM(ciphertext + 16-byte tag).
    vault = ReasoningVault(None, keys=[KEY_1], retention=60)  # type: ignore[arg-type]
    assert vault.unseal(t1, owner_for_key(KEY_A)) == ["Private chain of thought."]
    with pytest.raises(SealError):
        vault.unseal(t1, owner_for_key(KEY_B))


# ---- keys: rotation, persistence, races ----------------------------------------------------------

def _round_trip(server: ServerProcess, script, token: str | None = None) -> str:
    """Open `token` (if given) through the server, and return a fresh token it issued."""
    client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    if token is not None:
        client.responses.create(model="thinker-1", input=_echo(token), store=False)
        assert assistant_messages(script.requests[-1])[0]["reasoning_content"] == "Private chain of thought."
    return _sealed(client, script)


def _rejects(server: ServerProcess, token: str) -> None:
    client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="thinker-1", input=_echo(token), store=False)
    assert e.value.body["param"] == "input[1].encrypted_content"


def test_key_rotation_across_restarts(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = _serve(data, engine, "--reasoning-key", KEY_1)
    try:
        old = _round_trip(server, script)
        client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
        script.add({"reasoning": "Stored under the first key.", "content": "a"})
        stored = client.responses.create(model="thinker-1", input="q", include=INCLUDE).output[0]
        assert stored.encrypted_content
    finally:
        server.stop()
    # The new key first, the old one after it (here through the environment): both decrypt.
    server = _serve(data, engine, env={"RESPONSA_REASONING_KEY": f"{KEY_2},{KEY_1}"})
    try:
        new = _round_trip(server, script, old)
    finally:
        server.stop()
    server = _serve(data, engine, "--reasoning-key", KEY_2)
    try:
        _round_trip(server, script, new)  # sealed under the new key
        _rejects(server, old)  # the retired key is gone
        # Stored items are trusted: a reference to one works whatever ciphertext it was stored with.
        client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
        client.responses.create(model="thinker-1", input=[
            {"role": "user", "content": "q"}, {"type": "item_reference", "id": stored.id},
            {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}])
        sent = assistant_messages(script.requests[-1])
        assert sent[0]["reasoning_content"] == "Stored under the first key."
    finally:
        server.stop()


def test_generated_key_persists_and_survives_configuring_keys(engine: ScriptedEngine, script,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = _serve(data, engine)
    try:
        token = _round_trip(server, script)
    finally:
        server.stop()
    db = sqlite3.connect(data / "responsa.db")
    names = [r[0] for r in db.execute("SELECT name FROM secrets")]
    db.close()
    assert names == ["reasoning-key/1"]
    server = _serve(data, engine)
    try:
        token = _round_trip(server, script, token)  # the same key after a restart
    finally:
        server.stop()
    server = _serve(data, engine, "--reasoning-key", KEY_1)
    try:
        fresh = _round_trip(server, script, token)  # the stored key still decrypts
    finally:
        server.stop()
    assert ReasoningVault(None, keys=[KEY_1], retention=60).unseal(fresh, owner_for_key(KEY_A))  # type: ignore[arg-type]


def test_replicas_starting_together_share_one_key(tmp_path: Path) -> None:
    async def main() -> None:
        store = SQLiteStore(str(tmp_path / "r.db"))
        await store.open()
        try:
            vaults = [ReasoningVault(store, retention=3600) for _ in range(4)]
            await asyncio.gather(*(v.start() for v in vaults))
            assert list(await store.get_secrets("reasoning-key/")) == ["reasoning-key/1"]
            token = vaults[0].seal(["shared"], "owner")
            assert all(v.unseal(token, "owner") == ["shared"] for v in vaults)
        finally:
            await store.close()

    asyncio.run(main())


def test_replicas_on_postgresql_share_the_generated_key(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    import pg

    url = pg.create_database("responsa_reasoning")
    servers = [ServerProcess(tmp_path / name, "--config", str(_config(tmp_path, engine)), "--api-key", KEY_A,
                             "--database-url", url, "--database-pool-size", "2") for name in ("a", "b")]
    try:
        starting = [threading.Thread(target=s.start) for s in servers]  # both create the key at once
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        assert all(s.proc is not None and s.proc.poll() is None for s in servers)
        token = _round_trip(servers[0], script)
        back = _round_trip(servers[1], script, token)
        _round_trip(servers[0], script, back)
        keys = pg.admin_on(url, "SELECT name FROM secrets WHERE name LIKE 'reasoning-key/%'")
        assert [r[0] for r in keys] == ["reasoning-key/1"]
    finally:
        for s in servers:
            s.stop()
        pg.drop_database(url)


@pytest.mark.parametrize("args", [["--reasoning-key", "too-short"], ["--stream-dialect", "klingon"]])
def test_bad_settings_refused(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "responsa", "serve", "--data-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert args[0] in proc.stderr


# ---- store: false ----------------------------------------------------------------------------------

def _everything_in(data_dir: Path) -> tuple[bytes, str]:
    """The raw bytes of every file in the data dir, and every value of every database table."""
    raw = b"".join(p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file())
    db = sqlite3.connect(f"file:{data_dir / 'responsa.db'}?mode=ro", uri=True)
    rows = []
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
        for row in db.execute(f'SELECT * FROM "{table}"'):
            rows.extend(v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in row)
    db.close()
    return raw, "\n".join(rows)


def test_store_false_leaves_nothing_behind(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = _serve(data, engine, "--reasoning-key", KEY_1)
    client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    mark = "zq" + uuid.uuid4().hex[:10]  # unique strings that must appear nowhere
    markers = {f"{mark}-{what}" for what in ("input", "instr", "meta", "think", "answer", "args", "fco",
                                              "output", "boom", "stream", "fail")}
    try:
        script.add(  # each turn answers only its own request (`match`: the last user or tool text)
            {"match": f"{mark}-input", "reasoning": f"{mark}-think", "content": f"{mark}-answer"},
            {"match": f"{mark}-stream", "reasoning": f"{mark}-think",
             "tool_calls": [{"name": "exec_command", "arguments": {"cmd": f"{mark}-args"}}]},
            {"match": f"{mark}-output", "content": f"{mark}-answer", "reasoning": f"{mark}-think"},
            {"match": f"{mark}-fail", "status": 500, "error": f"engine exploded on {mark}-boom"},
        )
        r1 = client.responses.create(model="thinker-1", input=f"{mark}-input", instructions=f"{mark}-instr",
                                     metadata={"k": f"{mark}-meta"}, store=False, include=INCLUDE,
                                     reasoning={"effort": "low"})
        events = collect(client.responses.create(model="thinker-1", input=f"{mark}-stream", tools=[EXEC_TOOL],
                                                 store=False, stream=True, include=INCLUDE))
        check_events(events)
        rs, call = final(events)["output"]
        assert rs["encrypted_content"] and call["type"] == "function_call", events
        history = [
            {"role": "user", "content": f"{mark}-stream"},
            {"type": "reasoning", "id": rs["id"], "summary": [], "content": None,
             "encrypted_content": rs["encrypted_content"]},
            {"type": "function_call", "id": call["id"], "call_id": call["call_id"], "name": call["name"],
             "arguments": call["arguments"], "status": "completed"},
            {"type": "function_call_output", "id": f"fco_{mark}-fco", "call_id": call["call_id"],
             "output": f"{mark}-output"}]
        r3 = client.responses.create(model="thinker-1", store=False, include=INCLUDE, tools=[EXEC_TOOL],
                                     input=history)
        check_response(r3)
        assert r3.output_text == f"{mark}-answer"
        failed = client.responses.create(model="thinker-1", input=f"{mark}-fail", store=False)
        assert failed.status == "failed"
        ids = [r1.id, final(events)["id"], r3.id, failed.id]
        item_ids = [o.id for o in r1.output] + [rs["id"], call["id"]] + [o.id for o in r3.output]
        tokens = [r1.output[0].encrypted_content, rs["encrypted_content"], r3.output[0].encrypted_content]
        # A stored response next to them, to show the inspection finds what is there.
        control = client.responses.create(model="thinker-1", input=f"{mark}-control")
        for rid in ids:
            with pytest.raises(openai.NotFoundError):
                client.responses.retrieve(rid)
            with pytest.raises(openai.NotFoundError):
                client.responses.input_items.list(rid)
            with pytest.raises(openai.NotFoundError):
                client.responses.create(model="thinker-1", input="x", previous_response_id=rid)
        for stopped in (False, True):  # while running (WAL), then checkpointed after shutdown
            if stopped:
                server.stop()
            raw, tables = _everything_in(data)
            assert f"{mark}-control".encode() in raw and f"{mark}-control" in tables
            assert control.id in tables
            for secret in sorted(markers) + ids + item_ids + tokens:
                assert secret not in tables, f"{secret} found in the database"
                if secret in markers:  # ids may appear in access-log lines of the 404s
                    assert secret.encode() not in raw, f"{secret} found in a file of the data dir"
            # No other files: the database (with its WAL and lock files) and the harness's log.
            assert all(p.name.startswith("responsa.db") or p == server.log_path for p in data.iterdir())
    finally:
        server.stop()


# ---- the Open Responses dialect ------------------------------------------------------------------

def test_open_responses_stream_dialect(engine: ScriptedEngine, script, tmp_path: Path) -> None:
    server = _serve(tmp_path / "data", engine, "--stream-dialect", "open-responses")
    try:
        client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
        script.add({"reasoning": "Open thinking here.", "content": "Done."})
        events = collect(client.responses.create(model="thinker-1", input="q", stream=True))
    finally:
        server.stop()
    names = {"response.reasoning.delta": "response.reasoning_text.delta",
             "response.reasoning.done": "response.reasoning_text.done"}
    types = [e["type"] for e in events]
    assert types.count("response.reasoning.delta") == 3 and types.count("response.reasoning.done") == 1
    assert not any(t.startswith("response.reasoning_text") for t in types)
    schema = {"response.reasoning.delta": "ResponseReasoningDeltaStreamingEvent",
              "response.reasoning.done": "ResponseReasoningDoneStreamingEvent"}
    for e in events:
        if e["type"] in schema:
            jsonschema.validate(e, _schema(schema[e["type"]]))
    # Everything else, and the grammar, as usual (the two renamed events checked under SDK names).
    check_events([{**e, "type": names.get(e["type"], e["type"])} for e in events])
    done = next(e for e in events if e["type"] == "response.reasoning.done")
    assert done["text"] == "Open thinking here."


# ---- the event grammar, in process ------------------------------------------------------------------

def _events_of(build: Any) -> list[dict]:
    from responsa.events import ResponseEvents, empty_usage
    from responsa.protocol import parse_create

    out: list[dict] = []

    async def sink(batch: list[dict]) -> None:
        out.extend(batch)

    async def main() -> None:
        response = {"id": "resp_grammar", "object": "response", "created_at": 1, "status": "in_progress",
                    "completed_at": None, "error": None, "incomplete_details": None, "model": "m", "output": [],
                    "usage": None, **parse_create({"model": "m", "input": "q"}).echo()}
        events = ResponseEvents(response, sink)
        events.item_done_hooks.append(lambda item: item.setdefault("hooked", True))
        events.created()
        events.in_progress()
        build(events)
        events.completed(empty_usage())
        await events.flush()

    asyncio.run(main())
    return out


def test_interleaved_summary_and_raw_reasoning_get_separate_parts() -> None:
    def build(events: Any) -> None:
        events.reasoning_summary_delta("S1 ")
        events.reasoning_summary_delta("more")
        events.reasoning_delta("raw one")
        events.reasoning_summary_delta("S2")  # a new summary part: the first one is done
        events.text_delta("answer")

    events = _events_of(build)
    check_events(events)
    reasoning = events[-1]["response"]["output"][0]
    assert reasoning["summary"] == [{"type": "summary_text", "text": "S1 more"},
                                    {"type": "summary_text", "text": "S2"}]
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "raw one"}]
    assert reasoning["hooked"] is True  # the done hook saw the finished item
    types = [e["type"].removeprefix("response.") for e in events if e.get("output_index") == 0]
    assert types == [
        "output_item.added", "reasoning_summary_part.added", "reasoning_summary_text.delta",
        "reasoning_summary_text.delta", "reasoning_summary_text.done", "reasoning_summary_part.done",
        "content_part.added", "reasoning_text.delta", "reasoning_text.done", "content_part.done",
        "reasoning_summary_part.added", "reasoning_summary_text.delta", "reasoning_summary_text.done",
        "reasoning_summary_part.done", "output_item.done",
    ]
    assert [e["summary_index"] for e in events if e["type"].startswith("response.reasoning_summary_part")] \
        == [0, 0, 1, 1]


def test_whole_reasoning_item_announced_in_canonical_order() -> None:
    item = {"id": "rs_whole", "type": "reasoning", "status": "completed",
            "summary": [{"type": "summary_text", "text": "Short."}], "content": []}
    events = _events_of(lambda ev: ev.reasoning_item(item))
    check_events(events)
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["content"] == [] and added["item"]["summary"] == []
    assert events[-1]["response"]["output"][0]["summary"] == item["summary"]
