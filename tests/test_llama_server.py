"""End to end with a real engine: `llama_cpp.server` serves the SmolLM2 GGUF on loopback as an
OpenAI-compatible upstream, and a Responsa server fronts it. Structure only, never wording."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import jsonschema
import pytest
from harness import KEY_A, ServerProcess, check_events, check_response, free_port
from openai import OpenAI

pytest.importorskip("llama_cpp.server.app", reason="needs llama-cpp-python[server]")

from responsa.backends import ModelOptions, TurnRequest
from responsa.backends.embedded import default_model_path
from responsa.config import ConfigError
from responsa.tokens import estimate

pytestmark = pytest.mark.embedded

# A forced call is generated under a grammar that llama-cpp-python's server builds from the
# function's schema. Its strings admit raw control characters and need never end, so with a
# plain {"type": "string"} the model may write a newline and then prose into `city` until it
# runs out of tokens, and which it does depends on the machine the engine was compiled for. A
# bounded pattern makes every output that grammar allows a finished, schema-valid call: the
# forced-call tests then hold for any build and any sampling, and test Responsa, not luck.
CITY = {"type": "string", "pattern": "^[A-Za-z ]{1,24}$"}
UNIT = {"type": "string", "enum": ["celsius", "fahrenheit"]}
WEATHER = {"type": "object", "properties": {"city": CITY, "unit": UNIT}, "required": ["city", "unit"],
           "additionalProperties": False}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Current weather in a city.",
          "parameters": WEATHER, "strict": True}]
FORCED = {"type": "function", "name": "get_weather"}
# The same function with an unbounded string: what the engine does with it is up to the engine.
LOOSE = {**WEATHER, "properties": {**WEATHER["properties"], "city": {"type": "string"}}}
LOOSE_TOOLS = [{**TOOLS[0], "parameters": LOOSE}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free loopback port; yields its /v1 URL."""
    try:
        model = default_model_path()
    except ConfigError as e:
        pytest.skip(f"the embedded default model is not installed: {e}")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1", "--port",
             str(port), "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1", "--verbose", "false"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited:\n{log_path.read_text(errors='replace')}")
            try:
                if httpx.get(url + "/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def fronted(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    proc = ServerProcess(tmp_path_factory.mktemp("fronted"), "--upstream-base-url", engine, "--api-key", KEY_A)
    proc.start()
    yield OpenAI(base_url=proc.base_url, api_key=KEY_A, max_retries=0, timeout=300)
    proc.stop()


def test_text(fronted: OpenAI) -> None:
    r = fronted.responses.create(model="smollm2", input="What is the capital of France?", max_output_tokens=40)
    check_response(r)
    assert r.status in ("completed", "incomplete") and r.output_text.strip()
    assert r.usage.input_tokens > 0 and 0 < r.usage.output_tokens <= 40


def test_text_streamed(fronted: OpenAI) -> None:
    events = list(fronted.responses.create(model="smollm2", input="Name three colours.", stream=True,
                                           max_output_tokens=40))
    check_events(events)
    final = events[-1].response
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert final.status in ("completed", "incomplete") and len(deltas) > 1
    assert "".join(deltas) == final.output_text


def test_forced_tool_call(fronted: OpenAI) -> None:
    r = fronted.responses.create(model="smollm2", input="What's the weather in Paris?", tools=TOOLS,
                                 tool_choice=FORCED, temperature=0)
    check_response(r)
    calls = [o for o in r.output if o.type == "function_call"]
    assert r.status == "completed" and len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER)


def test_forced_tool_call_streamed(fronted: OpenAI) -> None:
    events = list(fronted.responses.create(model="smollm2", input="What's the weather in Oslo?", tools=TOOLS,
                                           tool_choice=FORCED, temperature=0, stream=True))
    check_events(events)
    final = events[-1].response
    call = next(o for o in final.output if o.type == "function_call")
    assert final.status == "completed" and call.name == "get_weather"
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert deltas and "".join(deltas) == call.arguments
    jsonschema.validate(json.loads(call.arguments), WEATHER)


@pytest.mark.parametrize("stream", [False, True])
def test_a_call_is_never_handed_out_broken(fronted: OpenAI, stream: bool) -> None:
    """Whatever the engine writes into an unbounded string, a completed call's arguments match
    the strict schema; anything else is a failed or incomplete response that says so."""
    kwargs = {"model": "smollm2", "input": "What's the weather in Paris? Explain at length.",
              "tools": LOOSE_TOOLS, "tool_choice": FORCED, "temperature": 0, "max_output_tokens": 48}
    if stream:
        events = list(fronted.responses.create(**kwargs, stream=True))
        check_events(events)
        r = events[-1].response
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
        done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
        assert done == [deltas] == [o.arguments for o in r.output if o.type == "function_call"]
    else:
        r = fronted.responses.create(**kwargs)
        check_response(r)
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    if r.status == "completed":
        jsonschema.validate(json.loads(calls[0].arguments), LOOSE)
    elif r.status == "failed":
        assert "function 'get_weather'" in r.error.message and calls[0].status == "incomplete"
    else:
        assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"


def test_input_tokens_from_the_engines_tokenizer(fronted: OpenAI) -> None:
    """llama_cpp.server counts at /extras/tokenize/count, fed the messages as ChatML (SmolLM2's
    format): the count is the prompt the engine then reports having read."""
    kwargs = {"model": "smollm2", "input": "What is the capital of France?", "instructions": "Answer in one word."}
    count = fronted.responses.input_tokens.count(**kwargs)
    r = fronted.responses.create(**kwargs, max_output_tokens=16)
    assert count.object == "response.input_tokens"
    assert count.input_tokens == r.usage.input_tokens
    # Not the estimate, which differs here.
    guess = estimate(TurnRequest(model="smollm2", items=[{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": kwargs["input"]}]}], options=ModelOptions(instructions=kwargs["instructions"])))
    assert guess != count.input_tokens
