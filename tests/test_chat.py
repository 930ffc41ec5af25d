"""Pure tests of the item -> Chat Completions message rendering (chat.py)."""

from __future__ import annotations

import copy

import orjson

from responsa import chat
from responsa.chat import ChatOptions, Continued, mcp_function_name, messages_json, to_messages


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


def test_a_continued_prefix_is_built_from_its_base() -> None:
    turn1 = [msg("user", "one"), msg("assistant", "1")]
    turn2 = [msg("user", "two"), call("c1"), output("c1", "r")]
    items = [*turn1, *turn2, msg("user", "three")]
    to_messages(turn1, prefix=("test-conv-1", 2))
    grown = Continued("test-conv-2", "test-conv-1", 2)
    assert to_messages(items, prefix=(grown, 5)) == to_messages(items)
    assert to_messages(items, prefix=("test-conv-2", 5)) == to_messages(items)  # cached under its own key
    # The base's cached rendering is what it continues: a base cached from other items shows.
    to_messages([msg("user", "elsewhere"), msg("assistant", "e")], prefix=("test-conv-3", 2))
    built = to_messages(items, prefix=(Continued("test-conv-4", "test-conv-3", 2), 5))
    assert built[0] == {"role": "user", "content": "elsewhere"} and built[2:] == to_messages(items)[2:]
    # Without the base cached, or with an item after it that changes earlier ones, it renders whole.
    assert to_messages(items, prefix=(Continued("test-conv-5", "test-conv-missing", 2), 5)) == to_messages(items)
    request = {"type": "mcp_approval_request", "id": "mcpr_8", "server_label": "s", "name": "t", "arguments": "{}"}
    answer = {"type": "mcp_approval_response", "approval_request_id": "mcpr_8", "approve": False}
    later = [*turn1, request, answer, msg("user", "four")]
    to_messages([*turn1, request], prefix=("test-conv-6", 3))
    assert to_messages(later, prefix=(Continued("test-conv-7", "test-conv-6", 3), 4)) == to_messages(later)


def test_messages_json_is_the_json_of_the_messages() -> None:
    turns = [[msg("user", "one"), msg("assistant", "1")],
             [msg("user", "two"), {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text",
                                                                                     "text": "hm"}]}, call("c1")],
             [output("c1", [{"type": "input_text", "text": "r"}, IMAGE]), msg("assistant", "seen")],
             [msg("developer", "note"), call("c2"), call("c3"), output("c2", "x"), output("c3", "y")],
             [msg("assistant", "let me check")], [call("c4"), output("c4", "z")]]  # the call joins that message
    for options in (ChatOptions(), ChatOptions(reasoning_input="reasoning_content"), ChatOptions(merge_system=True)):
        for instructions in (None, "sys"):
            items: list[dict] = []
            base: tuple | None = None
            for n, turn in enumerate(turns):
                items = [*items, *turn]
                key = ("test-json", repr(options), instructions, n)
                name = key if base is None else Continued(key, base, len(items) - len(turn))
                request = [*items, msg("user", "now")]
                got = b"".join(messages_json(request, instructions, options, (name, len(items))))
                assert got == orjson.dumps(to_messages(request, instructions, options, (key, len(items))))
                again = b"".join(messages_json(request, instructions, options, (key, len(items))))  # cached
                assert again == got
                base = key
            whole = b"".join(messages_json(items, instructions, options))
            assert whole == orjson.dumps(to_messages(items, instructions, options))


def test_a_continued_prefix_takes_its_json_over_from_its_base() -> None:
    first = [msg("user", "one"), msg("assistant", "1")]
    messages_json([*first, msg("user", "two")], None, ChatOptions(), (Continued("json-1", "json-0", 0), 2))
    grown = [*first, msg("user", "two"), msg("assistant", "2")]
    messages_json([*grown, msg("user", "three")], None, ChatOptions(), (Continued("json-2", "json-1", 2), 4))
    options = ChatOptions()
    assert chat._PREFIXES[("json-2", options)].encoded is not None
    assert chat._PREFIXES[("json-1", options)].encoded is None  # handed over: one copy per conversation


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
