"""Pure parts of compaction and token counting: what the engine gets from a conversation that
holds compaction items, the estimate, and where engines keep their tokenize endpoints."""

from __future__ import annotations

from pathlib import Path

import pytest

from responsa.backends import ModelOptions, TurnRequest
from responsa.backends.tokenize import chatml, root_url
from responsa.compaction import PURPOSE, SUMMARY_HEADER, open_context, seal
from responsa.errors import InvalidRequest
from responsa.reasoning import ReasoningVault
from responsa.store.sqlite import SQLiteStore
from responsa.tokens import estimate


@pytest.fixture
def vault(tmp_path: Path) -> ReasoningVault:
    return ReasoningVault(SQLiteStore(str(tmp_path / "x.db")), keys=["k" * 32], retention=3600)


def user(text: str) -> dict:
    return {"id": f"msg_{text}", "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


def assistant(text: str) -> dict:
    return {"id": f"msg_a{text}", "type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def compaction(vault: ReasoningVault, summary: str, owner: str = "o") -> dict:
    return {"id": f"cmp_{summary}", "type": "compaction", "encrypted_content": seal(vault, summary, owner)}


def texts(items: list[dict]) -> list[str]:
    return [i["content"][0]["text"] for i in items]


def test_without_compaction_items_nothing_changes(vault: ReasoningVault) -> None:
    items = [user("a"), assistant("b")]
    assert open_context(vault, items, "o", 1) == (items, 1)


def test_the_last_compaction_item_stands_for_what_the_model_wrote_before_it(vault: ReasoningVault) -> None:
    dev = {"id": "msg_dev", "type": "message", "role": "developer", "content": [{"type": "input_text", "text": "d"}]}
    call = {"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    out = {"id": "fco_1", "type": "function_call_output", "call_id": "c", "output": "r"}
    chain = [dev, user("u1"), call, out, assistant("a1"), compaction(vault, "first"), user("u2"),
             assistant("a2"), compaction(vault, "second"), assistant("a3")]
    items, first_input = open_context(vault, [*chain, user("u3")], "o", len(chain))
    assert texts(items) == ["d", "u1", "u2", SUMMARY_HEADER + "second", "a3", "u3"]
    assert first_input == 5  # the chain part still ends before the new input: its rendering may be reused
    # A compaction item in the new input: what precedes it changes, so no reuse.
    items, first_input = open_context(vault, [user("u1"), assistant("a1"), compaction(vault, "s"), user("u2")],
                                      "o", 1)
    assert texts(items) == ["u1", SUMMARY_HEADER + "s", "u2"] and first_input is None


def test_bad_items_in_the_input_are_named_even_when_not_used(vault: ReasoningVault) -> None:
    good, bad = compaction(vault, "ok"), compaction(vault, "x", owner="someone else")
    with pytest.raises(InvalidRequest) as e:
        open_context(vault, [user("u"), bad, good], "o", 1)
    assert e.value.param == "input[0].encrypted_content" and "different API key" in e.value.message
    reasoning_token = vault.seal(["thoughts"], "o")  # another purpose: not a summary
    with pytest.raises(InvalidRequest):
        open_context(vault, [{"type": "compaction", "encrypted_content": reasoning_token}], "o", 0)
    assert vault.unseal(good["encrypted_content"], "o", purpose=PURPOSE) == ["ok"]


def test_stored_items_are_trusted_past_their_expiry(vault: ReasoningVault) -> None:
    old = compaction(vault, "old")
    vault.clock = lambda: 10**12  # far past the token's expiry
    items, _ = open_context(vault, [old, user("u")], "o", 1)  # from the store: still opens
    assert texts(items)[0] == SUMMARY_HEADER + "old"
    with pytest.raises(InvalidRequest) as e:  # sent by a client: expired
        open_context(vault, [old], "o", 0)
    assert "expired" in e.value.message


def test_the_estimate() -> None:
    hello = TurnRequest(model="m", items=[user("hello")])
    assert estimate(hello) == 3 + 4 + 2
    briefed = TurnRequest(model="m", items=[user("hello")], options=ModelOptions(instructions="12345678"))
    assert estimate(briefed) == 9 + 4 + 2
    assert estimate(TurnRequest(model="m", items=[user("日本")])) == 3 + 4 + 2  # 6 UTF-8 bytes
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert estimate(TurnRequest(model="m", items=[user("hello")], tools=tools)) > 9


def test_where_engines_keep_their_tokenizers() -> None:
    assert root_url("http://gpu-1:8000/v1") == "http://gpu-1:8000"
    assert root_url("http://h/proxy/v1/") == "http://h/proxy"
    assert root_url("http://h:8080") == "http://h:8080"
    text = chatml([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert text == "<|im_start|>system\ns<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"

