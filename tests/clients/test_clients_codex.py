"""Codex CLI (`codex exec`, npm @openai/codex) against the live server, unchanged.

Codex always streams with `store: false` and `include: ["reasoning.encrypted_content"]`,
resends the whole history each turn, echoes reasoning with its ciphertext, invents ids for
its outputs (`fco_...`), and offers tool types the server cannot run. Each test runs the real
binary with a temporary CODEX_HOME (docs/clients/codex.md) through the recording proxy; the MCP
tests give Codex a real MCP server (tests/mcp_servers.py), which Codex itself calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from clientkit import NODE_DIR, node_ready
from harness import KEY_A, ServerProcess, sse_events, wait_for
from mcp_servers import MCPTestServer
from recorder import RecordingProxy

pytestmark = pytest.mark.node

CODEX = NODE_DIR / "node_modules" / ".bin" / "codex"
ENCRYPTED = "reasoning.encrypted_content"
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hello from apply_patch\n*** End Patch\n"


def codex(proxy: RecordingProxy | None, tmp_path: Path, prompt: str, *args: str, model: str = "gpt-5.5",
          base_url: str | None = None, websockets: bool = False, config: str = "") -> list[dict]:
    """Run `codex exec --json` in a scratch directory; return its JSONL events. It talks to the
    proxy, or straight to `base_url`; `websockets` turns Codex's WebSocket transport on; `config`
    is more of Codex's config.toml."""
    node_ready()
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    url = base_url or (proxy.base_url if proxy is not None else "")
    # No retries: a failing request must fail the test at once, not after minutes of backoff
    # (and over a WebSocket, not fall back to HTTP unnoticed).
    (home / "config.toml").write_text(f'''model = "{model}"
model_provider = "responsa"

[model_providers.responsa]
name = "Responsa"
base_url = "{url}"
wire_api = "responses"
env_key = "RESPONSA_CODEX_KEY"
request_max_retries = 0
stream_max_retries = 0
stream_idle_timeout_ms = 60000
supports_websockets = {"true" if websockets else "false"}
{config}''')
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    env = {**os.environ, "CODEX_HOME": str(home), "RESPONSA_CODEX_KEY": KEY_A}
    done = subprocess.run([str(CODEX), "exec", "--skip-git-repo-check", "--json", *args, prompt], cwd=work,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180,
                          check=False)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0, f"codex exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert events and events[-1]["type"] == "turn.completed", done.stdout
    return events


def items(events: list[dict], kind: str) -> list[dict]:
    return [e["item"] for e in events if e["type"] == "item.completed" and e["item"]["type"] == kind]


@pytest.fixture(scope="module")
def calc() -> Iterator[MCPTestServer]:
    server = MCPTestServer("calc").start()
    yield server
    server.stop()


def mcp_config(server: MCPTestServer) -> str:
    return f'\n[mcp_servers.calc]\nurl = "{server.mcp_url}"\n'


def offered(request: dict) -> set[str]:
    return {t["function"]["name"] for t in request.get("tools", [])}


def not_stored(server: ServerProcess, response_id: str) -> bool:
    r = httpx.get(f"{server.base_url}/responses/{response_id}", headers={"Authorization": f"Bearer {KEY_A}"})
    return r.status_code == 404


def test_codex_text_turn(proxy: RecordingProxy, script, clients_server: ServerProcess,
                         tmp_path: Path) -> None:
    script.add({"content": "Hello from Responsa.", "usage": {"prompt_tokens": 1234, "completion_tokens": 7}})
    events = codex(proxy, tmp_path, "say hello")
    assert [i["text"] for i in items(events, "agent_message")] == ["Hello from Responsa."]
    usage = events[-1]["usage"]
    assert usage["input_tokens"] == 1234 and usage["output_tokens"] == 7

    (post,) = proxy.posts()
    assert post.headers["accept"] == "text/event-stream"
    body = post.body
    assert body["stream"] is True and body["store"] is False and body["include"] == [ENCRYPTED]
    assert isinstance(body["client_metadata"], dict) and "instructions" not in body
    assert body["input"][0]["role"] == "developer"
    sent_types = {t["type"] for t in body["tools"]}
    assert {"function", "custom", "tool_search", "web_search"} <= sent_types
    # Tool types the server cannot run are accepted, named in a header, and not offered.
    assert post.response_headers["x-responsa-ignored-tools"] == "web_search"
    functions = {t["function"]["name"]: t["function"] for t in script.requests[0]["tools"]}
    assert set(functions) == {t["name"] for t in body["tools"] if t["type"] in ("function", "custom")} | \
        {"tool_search"}
    assert functions["apply_patch"]["parameters"]["required"] == ["input"]
    assert "lark grammar" in functions["apply_patch"]["description"]
    assert script.requests[0]["messages"][0]["role"] == "system"
    assert proxy.validate() == 1
    assert not_stored(clients_server, post.final()["id"])


def test_codex_parallel_function_calls_round_trip(proxy: RecordingProxy, script, tmp_path: Path) -> None:
    script.add({"tool_calls": [{"name": "exec_command", "arguments": {"cmd": "echo hi-from-responsa"}},
                               {"name": "exec_command", "arguments": {"cmd": "echo second-call"}}]},
               {"content": "Both commands ran."})
    events = codex(proxy, tmp_path, "run two commands")
    commands = sorted(items(events, "command_execution"), key=lambda c: c["command"])
    assert [c["exit_code"] for c in commands] == [0, 0]
    assert "hi-from-responsa" in commands[0]["aggregated_output"]
    assert "second-call" in commands[1]["aggregated_output"]
    assert items(events, "agent_message")[-1]["text"] == "Both commands ran."

    first, second = proxy.posts()
    calls = [i for i in first.final()["output"] if i["type"] == "function_call"]
    assert len(calls) == 2 and first.body["parallel_tool_calls"] is True
    new = second.body["input"][len(first.body["input"]):]
    echoed = {i["call_id"]: i for i in new if i["type"] == "function_call"}
    outputs = {i["call_id"]: i for i in new if i["type"] == "function_call_output"}
    for call in calls:
        assert echoed[call["call_id"]]["id"] == call["id"]
        assert outputs[call["call_id"]]["id"].startswith("fco_")  # Codex's own ids, kept
    assert "previous_response_id" not in second.body
    messages = script.requests[1]["messages"]
    assistant = next(m for m in messages if m.get("tool_calls"))
    assert [c["id"] for c in assistant["tool_calls"]] == [c["call_id"] for c in calls]
    results = {m["tool_call_id"]: m["content"] for m in messages if m["role"] == "tool"}
    assert "hi-from-responsa" in results[calls[0]["call_id"]] and "second-call" in results[calls[1]["call_id"]]
    assert proxy.validate() == 2


def test_codex_custom_tool_call_round_trip(proxy: RecordingProxy, script, tmp_path: Path) -> None:
    script.add({"tool_calls": [{"name": "apply_patch", "arguments": {"input": PATCH}}]},
               {"content": "Created hello.txt."})
    events = codex(proxy, tmp_path, "create hello.txt", "--sandbox", "workspace-write")
    assert (tmp_path / "work" / "hello.txt").read_text() == "hello from apply_patch\n"
    (change,) = items(events, "file_change")
    assert change["status"] == "completed" and change["changes"][0]["kind"] == "add"

    first, second = proxy.posts()
    done = [e["item"] for e in first.events() if e["type"] == "response.output_item.done"]
    (call,) = [i for i in done if i["type"] == "custom_tool_call"]
    assert call["name"] == "apply_patch" and call["input"] == PATCH
    new = second.body["input"][len(first.body["input"]):]
    assert [i["type"] for i in new] == ["custom_tool_call", "custom_tool_call_output"]
    assert new[0]["call_id"] == new[1]["call_id"] == call["call_id"]
    tool_message = script.requests[1]["messages"][-1]
    assert tool_message["role"] == "tool" and "hello.txt" in tool_message["content"]
    # The model saw its own call again as the function it called.
    assert json.loads(script.requests[1]["messages"][-2]["tool_calls"][0]["function"]["arguments"]) == \
        {"input": PATCH}
    assert proxy.validate() == 2


def test_codex_stateless_three_turns_with_encrypted_reasoning(
        proxy: RecordingProxy, script, clients_server: ServerProcess, tmp_path: Path) -> None:
    thoughts = ["First I list the files.", "Now I add the file.", "All done, I answer."]
    script.add({"reasoning": thoughts[0],
                "tool_calls": [{"name": "exec_command", "arguments": {"cmd": "ls"}}]},
               {"reasoning": thoughts[1],
                "tool_calls": [{"name": "apply_patch", "arguments": {"input": PATCH}}]},
               {"reasoning": thoughts[2], "content": "Added hello.txt."})
    events = codex(proxy, tmp_path, "list files then add hello.txt", "--sandbox", "workspace-write")
    assert items(events, "agent_message")[-1]["text"] == "Added hello.txt."

    posts = proxy.posts()
    assert len(posts) == 3
    for n, post in enumerate(posts):
        body = post.body
        assert body["store"] is False and body["include"] == [ENCRYPTED]
        assert "previous_response_id" not in body
        reasoning = [i for i in post.final()["output"] if i["type"] == "reasoning"]
        assert len(reasoning) == 1 and reasoning[0]["encrypted_content"], "no encrypted_content (issue 6)"
        assert thoughts[n] not in reasoning[0]["encrypted_content"]
        assert not_stored(clients_server, post.final()["id"])
        if n:
            # Full history every turn: the previous input, then the previous output echoed
            # (reasoning with its ciphertext), then Codex's own outputs.
            before = posts[n - 1]
            assert body["input"][:len(before.body["input"])] == before.body["input"]
            sent = {i["id"]: i for i in body["input"] if i.get("type") == "reasoning"}
            previous = next(i for i in before.final()["output"] if i["type"] == "reasoning")
            assert sent[previous["id"]]["encrypted_content"] == previous["encrypted_content"]
    assistant = [m for m in script.requests[2]["messages"] if m["role"] == "assistant"]
    assert [m.get("reasoning_content") for m in assistant] == thoughts[:2]
    assert proxy.validate() == 3

    # Against OpenAI, Codex echoes reasoning with `content: null` and only the ciphertext: the
    # next user turn sent that way must still give the engine all three thoughts back.
    replay = json.loads(json.dumps(posts[2].body))
    replay["input"] += [*posts[2].final()["output"],
                        {"type": "message", "role": "user",
                         "content": [{"type": "input_text", "text": "again"}]}]
    for item in replay["input"]:
        if item.get("type") == "reasoning":
            item["content"] = None
            item["summary"] = []
    script.add({"content": "Replayed."})
    with httpx.stream("POST", proxy.base_url + "/responses", json=replay, timeout=60,
                      headers={"Authorization": f"Bearer {KEY_A}", "Accept": "text/event-stream"}) as r:
        assert r.status_code == 200, r.read()
        streamed = sse_events(r.read())
    assert streamed[-1]["type"] == "response.completed"
    assistant = [m for m in script.requests[3]["messages"] if m["role"] == "assistant"]
    assert [m.get("reasoning_content") for m in assistant] == thoughts


def test_codex_unknown_model_slug(proxy: RecordingProxy, script, tmp_path: Path) -> None:
    """With a slug Codex has no metadata for, it sends a `namespace` tool instead of apply_patch."""
    script.add({"content": "Fallback works."})
    events = codex(proxy, tmp_path, "say hello", model="responsa-local")
    assert [i["text"] for i in items(events, "agent_message")] == ["Fallback works."]
    (post,) = proxy.posts()
    namespace = next(t for t in post.body["tools"] if t["type"] == "namespace")
    assert "namespace" not in post.response_headers["x-responsa-ignored-tools"].split(",")
    assert {f"{namespace['name']}__{t['name']}" for t in namespace["tools"]} <= offered(script.requests[0])
    assert post.body["model"] == "responsa-local"
    assert proxy.validate() == 1


def test_codex_turns_over_a_websocket(script, clients_server: ServerProcess, tmp_path: Path) -> None:
    """With `supports_websockets = true` Codex keeps one socket for the whole agent loop: a
    `generate: false` warm-up, then each turn as a `response.create` that sends only what is
    new since the previous (store=false) response, continued from the connection's cache.
    The recording proxy speaks HTTP only, so Codex talks to the server directly and the
    server's access log shows where its turns went."""
    script.add({"tool_calls": [{"name": "exec_command", "arguments": {"cmd": "echo hi-over-the-socket"}}]},
               {"content": "Done over the socket."})
    # Access lines are written in batches: once this probe's line is in the log, so is every
    # earlier test's, and what follows it is this test's.
    probe = f"/probe-{uuid.uuid4().hex}"
    httpx.get(clients_server.url + probe)
    start = wait_for(lambda: (log := clients_server.log()).find(probe) + 1 and len(log))
    events = codex(None, tmp_path, "run echo", base_url=clients_server.base_url, websockets=True)
    (command,) = items(events, "command_execution")
    assert command["exit_code"] == 0 and "hi-over-the-socket" in command["aggregated_output"]
    assert items(events, "agent_message")[-1]["text"] == "Done over the socket."

    def access_lines() -> list[str]:
        lines = clients_server.log()[start:].splitlines()
        return [line for line in lines if "responsa.access" in line and "/responses" in line]

    lines = wait_for(lambda: (found := access_lines()) and sum("response.create resp_" in x for x in found) >= 3
                     and found)
    creates = [x for x in lines if '"WS /v1/responses response.create resp_' in x]
    assert len(creates) == 3 and all(x.endswith("ms") and '" 200 ' in x for x in creates), lines
    assert not [x for x in lines if "POST /v1/responses" in x], "a turn went over HTTP"
    assert len([x for x in lines if '"WS /v1/responses" 101 ' in x]) == 1, lines  # one socket for all of it
    # The warm-up reached no engine; the second turn got the whole history although Codex sent
    # only its tool output.
    assert len(script.requests) == 2
    messages = script.requests[1]["messages"]
    assert [m["role"] for m in messages[-2:]] == ["assistant", "tool"]
    assert "hi-over-the-socket" in messages[-1]["content"]
    assert any("run echo" in str(m.get("content")) for m in messages)
    for line in creates:  # store=false: nothing of it was stored
        assert not_stored(clients_server, line.split("response.create ", 1)[1].split('"', 1)[0])
# ---- an MCP server configured in Codex (issue 15) -------------------------------------------------

def test_codex_mcp_tool_found_by_tool_search(proxy: RecordingProxy, script, calc: MCPTestServer,
                                             tmp_path: Path) -> None:
    """With a known slug Codex defers its MCP tools behind a client-run `tool_search`: the model
    searches, Codex answers with the `mcp__calc` namespace, the model calls `add` in it, Codex
    runs it on the MCP server and the model answers from the result."""
    calc.log.clear()
    script.add({"tool_calls": [{"name": "tool_search", "arguments": {"query": "calculator add"}}]},
               {"tool_calls": [{"name": "mcp__calc__add", "arguments": {"a": 2, "b": 3}}]},
               {"content": "2 + 3 = 5, says the calculator."})
    events = codex(proxy, tmp_path, "add 2 and 3 with the calculator", config=mcp_config(calc))
    (mcp_call,) = items(events, "mcp_tool_call")
    assert (mcp_call["server"], mcp_call["tool"], mcp_call["status"]) == ("calc", "add", "completed")
    assert mcp_call["result"]["structured_content"] == {"result": 5}
    assert items(events, "agent_message")[-1]["text"] == "2 + 3 = 5, says the calculator."
    assert [(c["name"], c["arguments"]) for c in calc.log.calls()] == [("add", {"a": 2, "b": 3})]

    first, second, third = proxy.posts()
    assert next(t for t in first.body["tools"] if t["type"] == "tool_search")["execution"] == "client"
    assert "mcp__calc__add" not in offered(script.requests[0]) and "tool_search" in offered(script.requests[0])
    (search,) = first.final()["output"]
    assert search["type"] == "tool_search_call" and search["execution"] == "client"
    assert search["arguments"] == {"query": "calculator add"}
    # Codex ran the search itself and sent the namespace it found; the model is offered its tools.
    loaded = next(i for i in second.body["input"] if i["type"] == "tool_search_output")
    assert loaded["call_id"] == search["call_id"] and loaded["tools"][0]["name"] == "mcp__calc"
    assert "mcp__calc__add" in offered(script.requests[1])
    (call,) = second.final()["output"]
    assert (call["type"], call["name"], call["namespace"]) == ("function_call", "add", "mcp__calc")
    result = next(i for i in third.body["input"] if i.get("call_id") == call["call_id"]
                  and i["type"] == "function_call_output")
    assert '"result":5' in result["output"]
    tool_message = script.requests[2]["messages"][-1]
    assert tool_message == {"role": "tool", "tool_call_id": call["call_id"], "content": result["output"]}
    assert script.requests[2]["messages"][-2]["tool_calls"][0]["function"]["name"] == "mcp__calc__add"
    assert proxy.validate() == 3


def test_codex_mcp_tool_in_a_namespace(proxy: RecordingProxy, script, calc: MCPTestServer,
                                       tmp_path: Path) -> None:
    """With a slug it has no metadata for, Codex sends its MCP tools in a `namespace` tool up front."""
    calc.log.clear()
    script.add({"tool_calls": [{"name": "mcp__calc__add", "arguments": {"a": 2, "b": 3}}]},
               {"content": "The calculator says 5."})
    events = codex(proxy, tmp_path, "add 2 and 3 with the calculator", model="responsa-local",
                   config=mcp_config(calc))
    (mcp_call,) = items(events, "mcp_tool_call")
    assert mcp_call["status"] == "completed" and mcp_call["result"]["structured_content"] == {"result": 5}
    assert items(events, "agent_message")[-1]["text"] == "The calculator says 5."
    assert [(c["name"], c["arguments"]) for c in calc.log.calls()] == [("add", {"a": 2, "b": 3})]

    first, second = proxy.posts()
    namespace = next(t for t in first.body["tools"] if t["type"] == "namespace" and t["name"] == "mcp__calc")
    assert "add" in {t["name"] for t in namespace["tools"]}
    assert "mcp__calc__add" in offered(script.requests[0])
    (call,) = first.final()["output"]
    assert (call["name"], call["namespace"]) == ("add", "mcp__calc")
    echoed = next(i for i in second.body["input"] if i["type"] == "function_call")
    assert (echoed["call_id"], echoed["namespace"]) == (call["call_id"], "mcp__calc")
    assert '"result":5' in script.requests[1]["messages"][-1]["content"]
    assert proxy.validate() == 2
