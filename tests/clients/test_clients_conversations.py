"""The OpenAI Agents SDK keeping its state in server-side conversations: `OpenAIConversationsSession`
(the SDK reads and writes the conversation's items itself) and `Runner.run(conversation_id=...)`
(the server adds each response's items). In both, a second run sees the first."""

from __future__ import annotations

from typing import Any

from harness import run_closing
from recorder import RecordingProxy
from test_clients_python import WEATHER_CALL, agents_client, sdk, tool_messages, weather_agent


def texts(messages: list[dict]) -> list[tuple[str, Any]]:
    return [(m["role"], m.get("content")) for m in messages if m["role"] in ("user", "assistant")]


def test_agents_openai_conversations_session(proxy: RecordingProxy, script) -> None:
    agents = sdk()
    script.add({"tool_calls": [WEATHER_CALL]}, {"content": "It is 21C in Paris."},
               {"content": "You asked about Paris."})
    calls: list[str] = []
    client = agents_client(proxy)
    agent = weather_agent(client, calls)

    async def run() -> tuple[Any, Any, list[Any]]:
        session = agents.OpenAIConversationsSession(openai_client=client)
        first = await agents.Runner.run(agent, "Weather in Paris?", session=session)
        second = await agents.Runner.run(agent, "Which city did I ask about?", session=session)
        items = await session.get_items()
        return first, second, items

    first, second, items = run_closing(run(), client)
    assert first.final_output == "It is 21C in Paris." and calls == ["Paris"]
    assert second.final_output == "You asked about Paris."
    messages = script.requests[2]["messages"]
    assert texts(messages) == [("user", "Weather in Paris?"), ("assistant", None),
                               ("assistant", "It is 21C in Paris."), ("user", "Which city did I ask about?")]
    assert tool_messages(messages) == ["21C in Paris"]
    kinds = [i["type"] if "type" in i else "message" for i in items]
    assert kinds.count("function_call") == 1 and kinds.count("function_call_output") == 1
    assert items[-1]["role"] == "assistant" and items[-1]["content"][0]["text"] == "You asked about Paris."
    assert proxy.posts("/conversations")  # the session made its conversation on this server
    assert proxy.validate() == 3


def test_agents_conversation_id(proxy: RecordingProxy, script) -> None:
    agents = sdk()
    script.add({"tool_calls": [WEATHER_CALL]}, {"content": "It is 21C in Paris."}, {"content": "Paris, again."})
    calls: list[str] = []
    client = agents_client(proxy)
    agent = weather_agent(client, calls)

    async def run() -> tuple[Any, Any, list[dict]]:
        conversation = await client.conversations.create()
        first = await agents.Runner.run(agent, "Weather in Paris?", conversation_id=conversation.id)
        second = await agents.Runner.run(agent, "Which city was it?", conversation_id=conversation.id)
        items = [i.model_dump() async for i in client.conversations.items.list(conversation.id, order="asc")]
        return first, second, items

    first, second, items = run_closing(run(), client)
    assert first.final_output == "It is 21C in Paris." and calls == ["Paris"]
    assert second.final_output == "Paris, again."
    posts = proxy.posts()
    assert all(p.body["conversation"] == posts[0].body["conversation"] for p in posts)
    # Each request sends only what is new; the server supplies the rest from the conversation.
    assert [i.get("type") for i in posts[1].body["input"]] == ["function_call_output"]
    assert posts[2].body["input"] == [{"role": "user", "content": "Which city was it?"}]
    messages = script.requests[2]["messages"]
    assert texts(messages) == [("user", "Weather in Paris?"), ("assistant", None),
                               ("assistant", "It is 21C in Paris."), ("user", "Which city was it?")]
    assert tool_messages(messages) == ["21C in Paris"]
    assert [i["type"] for i in items] == ["message", "function_call", "function_call_output", "message", "message",
                                          "message"]
    assert proxy.validate() == 3
