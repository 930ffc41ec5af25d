"""Pure tests of the item -> Chat Completions message rendering (chat.py)."""

from __future__ import annotations

import copy
import re

from responsa.chat import ChatOptions, mcp_function_name, namespaced_function_name, to_messages


def msg(role: str, text: str) -> dict:
    part = "output_text" if role == "assistant" else "input_text"
    return {"type": "message", "role": role, "content": [{"type": part, "text": text}]}


def call(call_id: str, name: str = "f", arguments: str = "{}") -> dict:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


def output(call_id: str, value: object) -> dict:
    return {"type": "function_call_output", "call_id": call_id, "output": value}


IMAGE = {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}


def test_roles_instructions_and_text_parts() -> None:
    items = [msg("developer", "dev"), msg("user", "hi"), msg("assistant", "hello"),
             {"role": "user", "type": "message", "content": [{"type": "input_text", "text": "a"},
                                                             {"type": "input_text", "text": "b"}]}]
    assert to_messages(items, "be brief") == [
        {"role": "system", "content": "be brief"}, {"role": "system", "content": "dev"},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "a\nb"}]


def test_parallel_calls_share_one_assistant_message_and_images_follow_the_tool_messages() -> None:
    items = [msg("user", "look"), msg("assistant", "checking"), call("a"), call("b"),
             output("a", [{"type": "input_text", "text": "shot"}, IMAGE]), output("b", "ok")]
    out = to_messages(items)
    assert out[1] == {"role": "assistant", "content": "checking", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert [m["role"] for m in out[2:]] == ["tool", "tool", "user"]
    assert out[2]["content"] == "shot" and out[3]["content"] == "ok"
    assert out[4]["content"] == [{"type": "image_url", "image_url": {"url": IMAGE["image_url"]}}]


def test_reasoning_goes_back_only_when_the_engine_takes_it() -> None:
    items = [msg("user", "q"), {"type": "reasoning", "summary": [], "content": [
        {"type": "reasoning_text", "text": "thinking"}]}, msg("assistant", "a")]
    assert to_messages(items)[1] == {"role": "assistant", "content": "a"}
    with_reasoning = to_messages(items, options=ChatOptions(reasoning_input="reasoning_content"))
    assert with_reasoning[1] == {"role": "assistant", "content": "a", "reasoning_content": "thinking"}


def test_mcp_denial_is_rendered_and_pending_requests_are_not() -> None:
    request = {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "docs", "name": "search",
               "arguments": '{"q": 1}'}
    assert to_messages([msg("user", "q"), request]) == [{"role": "user", "content": "q"}]
    denied = to_messages([msg("user", "q"), request, {"type": "mcp_approval_response",
                                                      "approval_request_id": "mcpr_1", "approve": False}])
    assert denied[1]["tool_calls"][0]["function"]["name"] == mcp_function_name("docs", "search")
    assert denied[2] == {"role": "tool", "tool_call_id": "mcpr_1", "content": "The user denied this tool call."}


def test_mcp_function_names_are_valid_and_distinct() -> None:
    a, b = mcp_function_name("srv", "files.read"), mcp_function_name("srv", "files/read")
    assert a != b
    for name in (a, b, mcp_function_name("x" * 40, "y" * 40)):
        assert len(name) <= 64 and all(c.isalnum() or c in "_-" for c in name)


def test_namespaced_function_names_are_valid_and_distinct() -> None:
    assert namespaced_function_name("crm", "list_orders") == "crm__list_orders"
    long_ns, long_name = "n" * 40, "t" * 40
    names = {namespaced_function_name(long_ns, long_name), namespaced_function_name(long_ns, long_name + "x"),
             namespaced_function_name(long_ns + "x", long_name)}
    assert len(names) == 3
    assert all(len(n) <= 64 and re.fullmatch(r"[A-Za-z0-9_-]+", n) for n in names)


def test_namespaced_calls_reach_the_model_under_their_flattened_names() -> None:
    items = [msg("user", "go"), {**call("a", "list_orders"), "namespace": "crm"},
             {"type": "custom_tool_call", "call_id": "b", "name": "note", "input": "hi", "namespace": "crm"},
             output("a", "[]"), {"type": "custom_tool_call_output", "call_id": "b", "output": "ok"}]
    calls = to_messages(items)[1]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["crm__list_orders", "crm__note"]


def test_tool_search_items_become_a_call_and_its_result() -> None:
    loaded = [{"type": "function", "name": "get_weather"},
              {"type": "namespace", "name": "crm", "description": "CRM", "tools": [{"type": "function",
                                                                                   "name": "list_orders"}]}]
    items = [msg("user", "go"),
             {"type": "tool_search_call", "id": "tsc_1", "call_id": "s1", "execution": "client",
              "arguments": {"query": "weather"}},
             {"type": "tool_search_output", "id": "tso_1", "call_id": "s1", "execution": "client", "tools": loaded},
             # The hosted API's own searches come back with `call_id: null` on both items.
             {"type": "tool_search_call", "id": "tsc_2", "call_id": None, "execution": "server",
              "arguments": {"paths": ["crm"]}},
             {"type": "tool_search_output", "id": "tso_2", "call_id": None, "execution": "server", "tools": []}]
    out = to_messages(items)
    assert out[1]["tool_calls"] == [{"id": "s1", "type": "function", "function": {
        "name": "tool_search", "arguments": '{"query": "weather"}'}}]
    assert out[2] == {"role": "tool", "tool_call_id": "s1", "content": "Loaded tools: get_weather, crm__list_orders."}
    assert out[3]["tool_calls"][0]["id"] == "tsc_2"
    assert out[4] == {"role": "tool", "tool_call_id": "tsc_2", "content": "No tools found."}
    # An output whose call is not in the conversation still reaches the model as a call and its result.
    alone = to_messages([msg("user", "go"), {"type": "tool_search_output", "id": "tso_3", "call_id": "gone",
                                             "execution": "client", "tools": loaded[:1]}])
    assert alone[1]["tool_calls"][0]["id"] == "gone" and alone[2]["tool_call_id"] == "gone"


def test_a_cached_prefix_renders_exactly_like_the_whole() -> None:
    chain = [msg("user", "one"), msg("assistant", "1"), msg("user", "two"), call("c1")]
    chain_before = copy.deepcopy(chain)
    follow = [output("c1", [{"type": "input_text", "text": "r"}, IMAGE]), msg("user", "three")]
    whole = to_messages([*chain, *follow], "sys")
    first = to_messages([*chain, *follow], "sys", prefix=("test-chain-1", len(chain)))
    again = to_messages([*chain, *follow], "sys", prefix=("test-chain-1", len(chain)))
    assert first == whole and again == whole
    # Continuing from the cache must not change what the cache holds.
    other = [call("c2"), output("c2", "x")]
    assert to_messages([*chain, *other], prefix=("test-chain-1", len(chain))) == to_messages([*chain, *other])
    assert to_messages([*chain, *follow], "sys", prefix=("test-chain-1", len(chain))) == whole
    assert chain == chain_before


def test_items_that_answer_older_ones_bypass_the_prefix_cache() -> None:
    request = {"type": "mcp_approval_request", "id": "mcpr_9", "server_label": "s", "name": "t", "arguments": "{}"}
    chain = [msg("user", "q"), request]
    to_messages(chain, prefix=("test-chain-2", len(chain)))  # cached while the request was pending
    answer = {"type": "mcp_approval_response", "approval_request_id": "mcpr_9", "approve": False}
    assert to_messages([*chain, answer], prefix=("test-chain-2", len(chain))) == to_messages([*chain, answer])


def test_merge_system_for_strict_templates() -> None:
    out = to_messages([msg("system", "a"), msg("user", "q"), msg("developer", "b")], "i",
                      ChatOptions(merge_system=True))
    assert out == [{"role": "system", "content": "i\n\na\n\nb"}, {"role": "user", "content": "q"}]
