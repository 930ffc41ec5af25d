"""Pure tests of the item -> Chat Completions message rendering (chat.py): messages, tool calls
and outputs, images and files, server-side tool items, the prefix cache."""

from __future__ import annotations

import collections
import copy
import re

import orjson
import pytest

from responsa import chat
from responsa.chat import (
    ChatOptions,
    Continued,
    mcp_function_name,
    messages_json,
    namespaced_function_name,
    text_of,
    to_messages,
    user_content,
)


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


# ---- content parts -------------------------------------------------------------------------

def test_text_of_joins_every_text_kind() -> None:
    assert text_of("plain") == "plain"
    assert text_of(None) == "" and text_of([]) == ""
    assert text_of([{"type": "output_text", "text": "only"}]) == "only"
    assert text_of([{"type": "input_text", "text": "a"}, {"type": "refusal", "refusal": "b"},
                    {"type": "summary_text", "text": "c"}, {"type": "reasoning_text", "text": "d"},
                    {"type": "input_image", "image_url": "x"}, {"type": "text", "text": "e"}]) == "a\nb\nc\nd\ne"


def test_user_content_with_images_and_files() -> None:
    parts = [{"type": "input_text", "text": "see"},
             {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
             {"type": "input_image", "image_url": "https://x/b.png", "detail": "auto"},
             {"type": "input_image", "file_id": "file-unresolved", "detail": "auto"},
             {"type": "input_file", "file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"},
             {"type": "input_file", "file_id": "file-1"}]
    assert user_content(parts) == [
        {"type": "text", "text": "see"},
        {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://x/b.png"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-1"}}]


def test_a_user_message_with_an_image_keeps_its_parts() -> None:
    out = to_messages([{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "what?"},
                                                                       IMAGE]}])
    assert out == [{"role": "user", "content": [
        {"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": IMAGE["image_url"]}}]}]


def test_assistant_refusals_and_multi_part_text_are_flattened() -> None:
    items = [msg("user", "q"), {"type": "message", "role": "assistant", "content": [
        {"type": "output_text", "text": "a"}, {"type": "refusal", "refusal": "no"}]}]
    assert to_messages(items)[1] == {"role": "assistant", "content": "a\nno"}


# ---- tool calls and outputs ------------------------------------------------------------------

def test_a_call_without_text_gets_an_assistant_message_of_its_own() -> None:
    out = to_messages([msg("user", "q"), call("c1", "f", ""), output("c1", "done"), msg("assistant", "ok")])
    assert out == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
        {"role": "assistant", "content": "ok"}]


def test_text_after_calls_is_a_new_assistant_message() -> None:
    out = to_messages([msg("user", "q"), call("c1"), msg("assistant", "then")])
    assert [m["role"] for m in out] == ["user", "assistant", "assistant"]
    assert out[2] == {"role": "assistant", "content": "then"}


def test_custom_tool_calls_go_as_functions_taking_input() -> None:
    items = [msg("user", "q"), {"type": "custom_tool_call", "call_id": "c", "name": "shell", "input": "ls"},
             {"type": "custom_tool_call_output", "call_id": "c", "output": "a.txt"}]
    out = to_messages(items)
    assert out[1]["tool_calls"][0]["function"] == {"name": "shell", "arguments": '{"input": "ls"}'}
    assert out[2] == {"role": "tool", "tool_call_id": "c", "content": "a.txt"}


def test_media_from_tool_outputs_is_flushed_before_the_next_message_and_at_the_end() -> None:
    image_output = output("c1", [IMAGE])
    before_message = to_messages([msg("user", "q"), call("c1"), image_output, msg("user", "next")])
    assert [m["role"] for m in before_message] == ["user", "assistant", "tool", "user", "user"]
    assert before_message[2]["content"] == ""
    assert before_message[3]["content"] == [{"type": "image_url", "image_url": {"url": IMAGE["image_url"]}}]
    # A following call flushes them too, after the tool messages they belong to.
    before_call = to_messages([msg("user", "q"), call("c1"), image_output, call("c2")])
    assert [m["role"] for m in before_call] == ["user", "assistant", "tool", "user", "assistant"]
    file_part = {"type": "input_file", "file_id": "file-1"}
    at_end = to_messages([msg("user", "q"), call("c1"), output("c1", [file_part])])
    assert at_end[-1] == {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}


def test_reasoning_before_a_call_rides_on_its_assistant_message() -> None:
    items = [msg("user", "q"), {"type": "reasoning", "summary": [{"type": "summary_text", "text": "plan"}]},
             call("c1"), output("c1", "r"), msg("assistant", "a")]
    out = to_messages(items, options=ChatOptions(reasoning_input="reasoning"))
    assert out[1] == {"role": "assistant", "content": None, "reasoning": "plan", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert out[3] == {"role": "assistant", "content": "a"}
    assert "reasoning" not in to_messages(items)[1]


def test_reasoning_between_two_assistant_messages_starts_a_new_one() -> None:
    items = [msg("user", "q"), msg("assistant", "first"),
             {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "r"}]},
             msg("assistant", "second")]
    out = to_messages(items, options=ChatOptions(reasoning_input="reasoning_content"))
    assert out[1:] == [{"role": "assistant", "content": "first"},
                       {"role": "assistant", "content": "second", "reasoning_content": "r"}]


def test_empty_reasoning_is_left_out() -> None:
    items = [msg("user", "q"), {"type": "reasoning", "summary": []}, msg("assistant", "a")]
    assert to_messages(items, options=ChatOptions(reasoning_input="reasoning_content"))[1] == {
        "role": "assistant", "content": "a"}


# ---- server-side tools and items the model does not need -------------------------------------

def test_mcp_calls_render_as_calls_with_their_output_or_error() -> None:
    ok = {"type": "mcp_call", "id": "mcp_1", "server_label": "docs", "name": "search", "arguments": '{"q":1}',
          "output": "found", "error": None}
    failed = {"type": "mcp_call", "id": "mcp_2", "server_label": "docs", "name": "search", "arguments": "",
              "output": None, "error": "boom"}
    out = to_messages([msg("user", "q"), ok, failed])
    # Calls run here one after another: each call, then its result.
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "assistant", "tool"]
    assert out[1]["tool_calls"] == [
        {"id": "mcp_1", "type": "function", "function": {"name": "mcp__docs__search", "arguments": '{"q":1}'}}]
    assert out[3]["tool_calls"] == [
        {"id": "mcp_2", "type": "function", "function": {"name": "mcp__docs__search", "arguments": "{}"}}]
    assert out[2] == {"role": "tool", "tool_call_id": "mcp_1", "content": "found"}
    assert out[4] == {"role": "tool", "tool_call_id": "mcp_2", "content": "Error: boom"}


def test_an_approved_mcp_call_is_rendered_once_under_the_request_id() -> None:
    request = {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "docs", "name": "search",
               "arguments": "{}"}
    approval = {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True}
    ran = {"type": "mcp_call", "id": "mcp_1", "approval_request_id": "mcpr_1", "server_label": "docs",
           "name": "search", "arguments": "{}", "output": "result"}
    # Approved but not run yet: nothing to show the model.
    assert to_messages([msg("user", "q"), request, approval]) == [{"role": "user", "content": "q"}]
    out = to_messages([msg("user", "q"), request, approval, ran])
    assert [m["role"] for m in out] == ["user", "assistant", "tool"]
    assert out[1]["tool_calls"][0]["id"] == "mcpr_1" and out[2]["tool_call_id"] == "mcpr_1"


def test_a_denial_with_a_reason_quotes_it() -> None:
    request = {"type": "mcp_approval_request", "id": "mcpr_2", "server_label": "s", "name": "t", "arguments": ""}
    denial = {"type": "mcp_approval_response", "approval_request_id": "mcpr_2", "approve": False,
              "reason": "too risky"}
    out = to_messages([msg("user", "q"), request, denial])
    assert out[1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert out[2]["content"] == "The user denied this tool call: too risky"


def test_image_generation_calls_tell_the_model_what_happened() -> None:
    made = {"type": "image_generation_call", "id": "ig_1", "status": "completed", "result": "AAAA",
            "revised_prompt": "a cat"}
    failed = {"type": "image_generation_call", "id": "ig_2", "status": "failed", "result": None,
              "error": {"message": "quota"}}
    out = to_messages([msg("user", "draw"), made, failed])
    assert out[1]["tool_calls"][0]["function"] == {"name": "image_generation", "arguments": '{"prompt": "a cat"}'}
    assert out[2] == {"role": "tool", "tool_call_id": "ig_1",
                      "content": "The image was generated and shown to the user."}
    assert out[3]["tool_calls"][0]["function"] == {"name": "image_generation", "arguments": '{"prompt": ""}'}
    assert out[4] == {"role": "tool", "tool_call_id": "ig_2", "content": "Image generation failed: quota"}


def test_computer_calls_and_screenshots() -> None:
    shot = "data:image/png;base64,BBBB"
    items = [msg("user", "click it"),
             {"type": "computer_call", "call_id": "cu1", "action": {"type": "click", "x": 1, "y": 2}},
             {"type": "computer_call_output", "call_id": "cu1", "output": {"type": "computer_screenshot",
                                                                         "image_url": shot}},
             {"type": "computer_call", "call_id": "cu2", "actions": [{"type": "wait"}]},
             {"type": "computer_call_output", "call_id": "cu2", "output": {}}]
    out = to_messages(items)
    assert out[1]["tool_calls"][0]["function"] == {"name": "computer",
                                                   "arguments": '{"action": {"type": "click", "x": 1, "y": 2}}'}
    assert out[2] == {"role": "tool", "tool_call_id": "cu1", "content": "Screenshot after the action:"}
    # The screenshot itself follows as a user message (tool messages carry text only).
    assert out[3] == {"role": "user", "content": [{"type": "image_url", "image_url": {"url": shot}}]}
    assert out[4]["tool_calls"][0]["function"]["arguments"] == '{"actions": [{"type": "wait"}]}'
    # No screenshot: the text alone, and nothing for the user message to carry.
    assert out[5] == {"role": "tool", "tool_call_id": "cu2", "content": "Screenshot after the action:"}
    assert len(out) == 6


def test_items_that_carry_nothing_for_the_model_are_left_out() -> None:
    items = [msg("user", "q"), {"type": "web_search_call", "id": "ws_1", "status": "completed"},
             {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "s", "tools": []},
             {"type": "file_search_call", "id": "fs_1"}, msg("assistant", "a")]
    assert to_messages(items) == [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


def test_a_file_search_call_reaches_a_later_turn_with_its_stored_results() -> None:
    call = {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["refund policy"],
            "results": [{"file_id": "file-1", "filename": "policy.md", "score": 0.9, "text": "30 days."}]}
    messages = to_messages([msg("user", "q"), call, msg("assistant", "30 days [1]")])
    assert messages[1]["tool_calls"][0]["function"] == {"name": "file_search",
                                                        "arguments": '{"queries": ["refund policy"]}'}
    result = messages[2]
    assert result["role"] == "tool" and result["tool_call_id"] == messages[1]["tool_calls"][0]["id"]
    assert "policy.md (file file-1):\n30 days." in result["content"]
    # Without `include`, the results were not stored: the model is told so, not given nothing.
    unstored = to_messages([msg("user", "q"), {**call, "results": None}])[2]["content"]
    assert unstored == 'Searched the user\'s files for ["refund policy"] (what was found is not kept).'
    failed = to_messages([msg("user", "q"), {**call, "status": "failed"}])[2]["content"]
    assert "failed" in failed


def test_mcp_function_names_keep_simple_names_readable() -> None:
    assert mcp_function_name("docs", "search") == "mcp__docs__search"
    long = mcp_function_name("s", "t" * 80)
    assert long.startswith("mcp__s__ttt") and len(long) == 64
    assert long != mcp_function_name("s", "t" * 81)


# ---- the prefix cache -------------------------------------------------------------------------

def test_the_prefix_cache_is_bounded_and_keeps_recent_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chat, "PREFIX_CACHE_SIZE", 2)
    monkeypatch.setattr(chat, "_PREFIXES", collections.OrderedDict())
    chain = [msg("user", "one"), msg("assistant", "1")]
    for key in ("k1", "k2", "k1", "k3"):  # k1 used again, so k2 is the least recent
        to_messages([*chain, msg("user", key)], prefix=(key, len(chain)))
    assert [k for k, _ in chat._PREFIXES] == ["k1", "k3"]


def test_the_cache_key_includes_the_options() -> None:
    chain = [msg("user", "q"), {"type": "reasoning", "summary": [{"type": "summary_text", "text": "r"}]},
             msg("assistant", "a")]
    plain = to_messages(chain, prefix=("test-chain-3", len(chain)))
    with_reasoning = to_messages(chain, options=ChatOptions(reasoning_input="reasoning_content"),
                                 prefix=("test-chain-3", len(chain)))
    assert "reasoning_content" not in plain[1] and with_reasoning[1]["reasoning_content"] == "r"


def test_a_cached_prefix_ending_in_calls_accepts_more_calls_without_changing_the_cache() -> None:
    chain = [msg("user", "q"), msg("assistant", "thinking"), call("c1")]
    to_messages(chain, prefix=("test-chain-4", len(chain)))
    more = to_messages([*chain, call("c2")], prefix=("test-chain-4", len(chain)))
    assert [c["id"] for c in more[1]["tool_calls"]] == ["c1", "c2"]
    again = to_messages([*chain, msg("user", "next")], prefix=("test-chain-4", len(chain)))
    assert [c["id"] for c in again[1]["tool_calls"]] == ["c1"]


def test_merge_system_keeps_system_messages_with_parts_in_place() -> None:
    rich = {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "x"}, IMAGE]}
    out = to_messages([msg("user", "q"), rich], options=ChatOptions(merge_system=True))
    assert [m["role"] for m in out] == ["user", "system"]
    assert to_messages([msg("user", "q")], options=ChatOptions(merge_system=True)) == [
        {"role": "user", "content": "q"}]
