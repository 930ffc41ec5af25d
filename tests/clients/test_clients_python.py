"""Python clients against the live server: the OpenAI Agents SDK, LangChain (`langchain-openai`
with the Responses API) and openai-python 1.x, 2.x and 3.x. Each goes through the recording
proxy; every Response and stream the server sent is validated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from clientkit import HERE, old_sdk_python
from harness import KEY_A, run_closing
from openai import AsyncOpenAI
from openai.types.shared import Reasoning
from recorder import RecordingProxy

WEATHER_CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


def tool_messages(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "tool"]


# ---- OpenAI Agents SDK -----------------------------------------------------------------------

def sdk() -> Any:
    return pytest.importorskip("agents", reason="openai-agents is in the `clients` extra (./scripts/test)")


def agents_client(proxy: RecordingProxy) -> AsyncOpenAI:
    """The client an agent talks through; a test closes it on its run's loop (`run_closing`)."""
    return AsyncOpenAI(base_url=proxy.base_url, api_key=KEY_A, max_retries=0)


def weather_agent(client: AsyncOpenAI, calls: list[str], **settings: Any) -> Any:
    agents = sdk()
    agents.set_tracing_disabled(True)

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        calls.append(city)
        return f"21C in {city}"

    return agents.Agent(name="weather", instructions="Be brief.", tools=[get_weather],
                        model=agents.OpenAIResponsesModel(model="gpt-4.1", openai_client=client),
                        model_settings=agents.ModelSettings(**settings))


def test_agents_text(proxy: RecordingProxy, script) -> None:
    script.add({"content": "Hello from the engine."})
    client = agents_client(proxy)
    result = run_closing(sdk().Runner.run(weather_agent(client, []), "Say hello"), client)
    assert result.final_output == "Hello from the engine."
    (post,) = proxy.posts()
    body = post.body
    assert body["instructions"] == "Be brief." and body["include"] == [] and "stream" not in body
    assert body["input"] == [{"role": "user", "content": "Say hello"}]
    tool = body["tools"][0]
    assert tool["strict"] is True and tool["parameters"]["additionalProperties"] is False
    assert script.requests[0]["tools"][0]["function"]["strict"] is True
    assert script.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert proxy.validate() == 1


def test_agents_streamed_tool_round_trip(proxy: RecordingProxy, script) -> None:
    script.add({"tool_calls": [WEATHER_CALL]}, {"content": "It is 21C in Paris."})
    calls: list[str] = []

    client = agents_client(proxy)

    async def run() -> tuple[Any, list[str]]:
        result = sdk().Runner.run_streamed(weather_agent(client, calls), "Weather in Paris?")
        kinds = [ev.type async for ev in result.stream_events()]
        return result, kinds

    result, kinds = run_closing(run(), client)
    assert result.final_output == "It is 21C in Paris." and calls == ["Paris"]
    assert "raw_response_event" in kinds
    first, second = proxy.posts()
    assert first.body["stream"] is True and first.streamed and second.streamed
    # Full input by default: the call echoed with id and status, then its output.
    echoed = second.body["input"]
    assert [i.get("type") for i in echoed] == [None, "function_call", "function_call_output"]
    assert echoed[1]["id"] and echoed[1]["status"] == "completed"
    assert tool_messages(script.requests[1]["messages"]) == ["21C in Paris"]
    assert proxy.validate() == 2


def test_agents_tool_round_trip_and_second_run(proxy: RecordingProxy, script) -> None:
    script.add({"tool_calls": [WEATHER_CALL]}, {"content": "It is 21C in Paris."}, {"content": "Still 21C."})
    calls: list[str] = []
    client = agents_client(proxy)
    agent = weather_agent(client, calls)

    async def run() -> tuple[Any, Any]:
        first = await sdk().Runner.run(agent, "Weather in Paris?")
        # A second run from to_input_list() echoes the assistant message with its id, status
        # and output_text parts carrying annotations and logprobs.
        follow_up = {"role": "user", "content": "And now?"}
        again = await sdk().Runner.run(agent, [*first.to_input_list(), follow_up])
        return first, again

    first, again = run_closing(run(), client)
    assert first.final_output == "It is 21C in Paris." and calls == ["Paris"]
    assert again.final_output == "Still 21C."
    message = next(i for i in proxy.posts()[2].body["input"] if i.get("role") == "assistant")
    assert message["id"].startswith("msg_") and message["content"][0]["annotations"] == []
    assert "logprobs" in message["content"][0]
    assert script.requests[2]["messages"][-2:] == [{"role": "assistant", "content": "It is 21C in Paris."},
                                                   {"role": "user", "content": "And now?"}]
    assert proxy.validate() == 3


def test_agents_previous_response_id(proxy: RecordingProxy, script) -> None:
    script.add({"tool_calls": [WEATHER_CALL]}, {"content": "It is 21C in Paris."})
    calls: list[str] = []
    client = agents_client(proxy)
    result = run_closing(sdk().Runner.run(weather_agent(client, calls), "Weather in Paris?",
                                          auto_previous_response_id=True), client)
    assert result.final_output == "It is 21C in Paris."
    first, second = proxy.posts()
    assert second.body["previous_response_id"] == first.final()["id"]
    assert [i["type"] for i in second.body["input"]] == ["function_call_output"]
    assert tool_messages(script.requests[1]["messages"]) == ["21C in Paris"]
    assert proxy.validate() == 2


def test_agents_store_false_with_reasoning(proxy: RecordingProxy, script) -> None:
    script.add({"reasoning": "Look it up.", "tool_calls": [WEATHER_CALL]}, {"content": "21C."})
    client = agents_client(proxy)
    agent = weather_agent(client, [], store=False, reasoning=Reasoning(effort="low", summary="auto"),
                          response_include=["reasoning.encrypted_content"])
    result = run_closing(sdk().Runner.run(agent, "Weather in Paris?"), client)
    assert result.final_output == "21C."
    first, second = proxy.posts()
    assert first.body["store"] is False and first.body["reasoning"] == {"effort": "low", "summary": "auto"}
    assert first.body["include"] == ["reasoning.encrypted_content"]
    assert script.requests[0]["reasoning_effort"] == "low"
    sealed = first.final()["output"][0]
    assert sealed["type"] == "reasoning" and sealed.get("encrypted_content"), "no encrypted_content (issue 6)"
    echoed = next(i for i in second.body["input"] if i.get("type") == "reasoning")
    assert echoed["id"] == sealed["id"] and echoed["encrypted_content"] == sealed["encrypted_content"]
    assistant = next(m for m in script.requests[1]["messages"] if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "Look it up."
    assert proxy.validate() == 2


# ---- LangChain -------------------------------------------------------------------------------

def chat_model(proxy: RecordingProxy, **options: Any) -> Any:
    lc = pytest.importorskip("langchain_openai", reason="langchain-openai is in the `clients` extra")
    return lc.ChatOpenAI(model="gpt-4.1", base_url=proxy.base_url, api_key=KEY_A, use_responses_api=True,
                         max_retries=0, **options)


def lc_tool() -> Any:
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Current weather for a city."""
        return f"21C in {city}"

    return get_weather


def test_langchain_invoke_with_system_message(proxy: RecordingProxy, script) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage

    script.add({"content": "Hello from the engine."})
    reply = chat_model(proxy).invoke([SystemMessage("Be brief."), HumanMessage("Say hello")])
    assert reply.text == "Hello from the engine."
    (post,) = proxy.posts()
    assert post.body["stream"] is False
    assert post.body["input"][0] == {"content": "Be brief.", "role": "system", "type": "message"}
    assert script.requests[0]["messages"][:2] == [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "Say hello"}]
    assert proxy.validate() == 1


def test_langchain_stream(proxy: RecordingProxy, script) -> None:
    script.add({"content": "one two three"})
    chunks = list(chat_model(proxy).stream("Count"))
    assert "".join(c.text for c in chunks) == "one two three"
    assert len(chunks) > 3
    (post,) = proxy.posts()
    assert post.body["stream"] is True and post.streamed
    assert proxy.validate() == 1


def test_langchain_tool_round_trip_full_history(proxy: RecordingProxy, script) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage

    script.add({"reasoning": "Look it up.", "tool_calls": [WEATHER_CALL]}, {"content": "It is 21C."})
    weather = lc_tool()
    llm = chat_model(proxy).bind_tools([weather])
    history: list[Any] = [SystemMessage("Use tools."), HumanMessage("Weather in Paris?")]
    ai = llm.invoke(history)
    (call,) = ai.tool_calls
    assert call["name"] == "get_weather" and call["args"] == {"city": "Paris"}
    history += [ai, ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"])]
    final = llm.invoke(history)
    assert final.text == "It is 21C."
    first, second = proxy.posts()
    assert "strict" not in first.body["tools"][0]
    kinds = [i.get("type") for i in second.body["input"]]
    assert kinds == ["message", "message", "reasoning", "function_call", "function_call_output"]
    reasoning = second.body["input"][2]
    assert reasoning["id"] == first.json()["output"][0]["id"]
    messages = script.requests[1]["messages"]
    assert messages[2]["reasoning_content"] == "Look it up."
    assert tool_messages(messages) == ["21C in Paris"]
    assert proxy.validate() == 2


def test_langchain_previous_response_id(proxy: RecordingProxy, script) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    script.add({"tool_calls": [WEATHER_CALL]}, {"content": "It is 21C."})
    llm = chat_model(proxy, use_previous_response_id=True).bind_tools([lc_tool()])
    history: list[Any] = [HumanMessage("Weather in Paris?")]
    ai = llm.invoke(history)
    history += [ai, ToolMessage("21C in Paris", tool_call_id=ai.tool_calls[0]["id"])]
    assert llm.invoke(history).text == "It is 21C."
    first, second = proxy.posts()
    assert second.body["previous_response_id"] == first.json()["id"]
    assert [i["type"] for i in second.body["input"]] == ["function_call_output"]
    assert tool_messages(script.requests[1]["messages"]) == ["21C in Paris"]
    assert proxy.validate() == 2


def test_langchain_stateless_encrypted_reasoning(proxy: RecordingProxy, script) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    script.add({"reasoning": "Look it up.", "tool_calls": [WEATHER_CALL]}, {"content": "It is 21C."})
    llm = chat_model(proxy, reasoning={"effort": "low", "summary": "auto"}, store=False,
                     include=["reasoning.encrypted_content"]).bind_tools([lc_tool()])
    history: list[Any] = [HumanMessage("Weather in Paris?")]
    ai = llm.invoke(history)
    history += [ai, ToolMessage("21C in Paris", tool_call_id=ai.tool_calls[0]["id"])]
    assert llm.invoke(history).text == "It is 21C."
    first, second = proxy.posts()
    sealed = first.json()["output"][0]
    assert sealed["type"] == "reasoning" and sealed.get("encrypted_content"), "no encrypted_content (issue 6)"
    echoed = next(i for i in second.body["input"] if i.get("type") == "reasoning")
    assert echoed["encrypted_content"] == sealed["encrypted_content"]
    assert script.requests[1]["messages"][1]["reasoning_content"] == "Look it up."
    assert proxy.validate() == 2


# ---- openai-python 1.x / 2.x / 3.x ------------------------------------------------------------

def run_sdk(major: str, proxy: RecordingProxy) -> dict:
    """Run every scenario of py/openai_sdk.py, in order, with openai-python `major`.x."""
    python = sys.executable if major == "3" else str(old_sdk_python(major))
    env = {**os.environ, "RESPONSA_BASE_URL": proxy.base_url, "RESPONSA_API_KEY": KEY_A}
    done = subprocess.run([python, str(HERE / "py" / "openai_sdk.py"), "all"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"openai {major}.x:\n{done.stdout}\n{done.stderr}"
    out = json.loads(done.stdout.splitlines()[-1])
    assert out.pop("sdk_version").split(".")[0] == major
    return out


@pytest.mark.parametrize("major", ["1", "2", "3"])
def test_openai_python(major: str, proxy: RecordingProxy, script) -> None:
    """A text turn (store=false), a raw stream and the stream helper, a function-call round trip
    (chained and stateless) and a retrieve with include[], in one process per SDK major."""
    script.add({"content": "Hello from the engine."},
               {"content": "one two three"}, {"content": "four five"},
               {"tool_calls": [WEATHER_CALL]}, {"content": "Chained."}, {"content": "Stateless."},
               {"content": "kept"})
    out = run_sdk(major, proxy)
    posts = proxy.posts()
    assert len(posts) == 7

    assert out["text"]["output_text"] == "Hello from the engine." and out["text"]["status"] == "completed"
    text = posts[0]
    assert text.headers["user-agent"] == f"OpenAI/Python {text.headers['x-stainless-package-version']}"
    assert text.body["store"] is False and text.body["include"] == ["reasoning.encrypted_content"]

    stream = out["stream"]
    assert stream["types"][0] == "response.created" and stream["types"][-1] == "response.completed"
    assert stream["helper_text"] == stream["helper_final"] == "four five"
    assert posts[1].streamed and posts[2].streamed

    assert out["tools"] == {"call": {"name": "get_weather", "arguments": {"city": "Paris"}},
                            "chained": "Chained.", "stateless": "Stateless."}
    for sent in script.requests[4:6]:
        assert tool_messages(sent["messages"]) == [json.dumps({"temp_c": 21})]

    assert out["retrieve"] == {"same": True, "output_text": "kept"}
    (get,) = [x for x in proxy.exchanges if x.method == "GET"]
    assert get.query == ("include%5B%5D=reasoning.encrypted_content"
                         "&include%5B%5D=message.output_text.logprobs")
    assert proxy.validate() == 8
