"""Computer use against the live server: tool entries, computer_call items, screenshots back to
the model, invalid actions, and the whole agent loop in headless Chromium (Playwright)."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from harness import KEY_A, ScriptedEngine, ServerProcess, ThreadServer, check_events, check_response, types_of, wire
from openai import OpenAI
from PIL import Image
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route

from responsa.backends.scripted import Script

ROOT = Path(__file__).resolve().parents[1]
PAGE = Path(__file__).with_name("computer_page.html")
WIDTH, HEIGHT = 640, 400
PREVIEW = {"type": "computer_use_preview", "display_width": WIDTH, "display_height": HEIGHT,
           "environment": "browser"}
NAME_FIELD, GREET_BUTTON = (190, 56), (120, 120)  # centres of the page's input and button
MODEL = "scripted-model"


def computer(action: dict | None = None, *, actions: list[dict] | None = None, raw: str | None = None) -> dict:
    """An engine turn calling the `computer` function."""
    args: Any = raw if raw is not None else ({"actions": actions} if actions is not None else {"action": action})
    return {"tool_calls": [{"name": "computer", "arguments": args}]}


def png(size: tuple[int, int], color: tuple[int, int, int] = (30, 90, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def screenshot_output(call_id: str, **screenshot: str) -> dict:
    return {"type": "computer_call_output", "call_id": call_id, "acknowledged_safety_checks": [],
            "output": {"type": "computer_screenshot", **screenshot}}


def streamed(client: OpenAI, **kwargs: Any) -> tuple[dict, list[dict]]:
    """A streamed create: the final response and every event, validated."""
    events = [wire(e) for e in client.responses.create(stream=True, **kwargs)]
    check_events(events)
    return events[-1]["response"], events


def images_in(messages: list[dict]) -> list[str]:
    """The image URLs of a Chat Completions request's messages, in order."""
    return [p["image_url"]["url"] for m in messages if isinstance(m.get("content"), list)
            for p in m["content"] if p.get("type") == "image_url"]


def offered(request: dict) -> dict:
    [tool] = request["tools"]
    return tool["function"]


# ---- the browser ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page_server() -> Iterator[ThreadServer]:
    server = ThreadServer(Starlette(routes=[Route("/", lambda request: FileResponse(PAGE))])).start()
    yield server
    server.stop()




@pytest.fixture
def page(browser: Any, page_server: ThreadServer) -> Iterator[Any]:
    tab = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
    tab.goto(page_server.url + "/")
    yield tab
    tab.close()


def perform(page: Any, action: dict) -> None:
    """The few actions the scripted model uses, performed in the browser."""
    if action["type"] == "click":
        page.mouse.click(action["x"], action["y"], button=action["button"])
    elif action["type"] == "type":
        page.keyboard.type(action["text"])
    else:
        assert action["type"] == "screenshot", action


def test_agent_loop_in_chromium(client: OpenAI, script: Script, engine: ScriptedEngine, page: Any) -> None:
    script.add(
        computer({"type": "screenshot"}),
        computer({"type": "click", "button": "left", "x": NAME_FIELD[0], "y": NAME_FIELD[1]}),
        computer({"type": "type", "text": "Ada"}),
        computer({"type": "click", "button": "left", "x": GREET_BUTTON[0], "y": GREET_BUTTON[1]}),
        {"content": "The page now says: Hello, Ada!"},
    )
    response, events = streamed(client, model=MODEL, input="Greet Ada on the page", tools=[PREVIEW])
    assert response["tools"] == [PREVIEW]
    calls: list[dict] = []
    sent: list[bytes] = []
    while True:
        found = [o for o in response["output"] if o["type"] == "computer_call"]
        if not found:
            break
        [call] = found
        index = response["output"].index(call)
        own = [e for e in events if e.get("output_index") == index]
        assert types_of(own) == ["response.output_item.added", "response.output_item.done"]
        assert own[0]["item"] == {**call, "status": "in_progress"} and own[1]["item"] == call
        assert response["status"] == "completed" and call["status"] == "completed"
        assert call["id"].startswith("cu_") and call["pending_safety_checks"] == [] and "actions" not in call
        calls.append(call)
        perform(page, call["action"])
        shot = page.screenshot()
        sent.append(shot)
        if len(sent) == 2:  # one screenshot goes by file_id: it must reach the engine as an image too
            uploaded = client.files.create(file=("shot.png", shot, "image/png"), purpose="vision")
            output = screenshot_output(call["call_id"], file_id=uploaded.id)
        else:
            output = screenshot_output(call["call_id"], image_url=data_url(shot))
        response, events = streamed(client, model=MODEL, tools=[PREVIEW], previous_response_id=response["id"],
                                    input=[output])
    assert response["status"] == "completed"
    assert response["output"][-1]["content"][0]["text"] == "The page now says: Hello, Ada!"
    assert [c["action"] for c in calls] == [
        {"type": "screenshot"},
        {"type": "click", "button": "left", "x": NAME_FIELD[0], "y": NAME_FIELD[1]},
        {"type": "type", "text": "Ada"},
        {"type": "click", "button": "left", "x": GREET_BUTTON[0], "y": GREET_BUTTON[1]}]
    # The page is in the state the actions imply.
    assert page.input_value("#name") == "Ada"
    assert page.inner_text("#status") == "Hello, Ada!"

    requests = engine.requests
    assert len(requests) == 5
    function = offered(requests[0])
    assert function["name"] == "computer" and function["parameters"]["required"] == ["action"]
    assert "640x400" in function["description"] and "web browser" in function["description"]
    assert set(function["parameters"]["properties"]["action"]["properties"]["type"]["enum"]) == {
        "click", "double_click", "drag", "keypress", "move", "screenshot", "scroll", "type", "wait"}
    for n in range(1, 5):
        messages = requests[n]["messages"]
        # Every screenshot so far, in order, as image parts (the file_id one inlined as a data: URL) ...
        assert images_in(messages) == [data_url(s) for s in sent[:n]]
        # ... the newest after the model's own call and its tool result.
        assistant, tool, user = messages[-3:]
        assert assistant["tool_calls"][0]["id"] == calls[n - 1]["call_id"]
        assert assistant["tool_calls"][0]["function"]["name"] == "computer"
        assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {"action": calls[n - 1]["action"]}
        assert tool["role"] == "tool" and tool["tool_call_id"] == calls[n - 1]["call_id"]
        assert user == {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(sent[n - 1])}}]}


def guide_code() -> str:
    """The agent loop of docs/computer-use.md, as printed there."""
    text = (ROOT / "docs" / "computer-use.md").read_text()
    match = re.search(r"<!-- agent-loop -->\n```python\n(.*?)```", text, re.S)
    assert match, "docs/computer-use.md lost its agent loop"
    return match.group(1)


def test_guide_agent_loop_with_computer_tool(client: OpenAI, script: Script, engine: ScriptedEngine,
                                             page: Any) -> None:
    agent: dict[str, Any] = {"__name__": "agent"}
    exec(compile(guide_code(), "docs/computer-use.md", "exec"), agent)
    script.add(
        computer(actions=[{"type": "screenshot"}]),
        computer(actions=[{"type": "click", "button": "left", "x": NAME_FIELD[0], "y": NAME_FIELD[1]},
                          {"type": "type", "text": "Gracf"}, {"type": "keypress", "keys": ["BACKSPACE"]},
                          {"type": "type", "text": "e"}]),
        computer(actions=[{"type": "double_click", "x": 500, "y": 300}, {"type": "move", "x": 10, "y": 10},
                          {"type": "click", "button": "left", "x": GREET_BUTTON[0], "y": GREET_BUTTON[1]}]),
        {"content": "Grace has been greeted."},
    )
    answer = agent["run_agent"](client, page, MODEL, "Greet Grace", tool={"type": "computer"})
    assert answer == "Grace has been greeted."
    assert page.input_value("#name") == "Grace"
    assert page.inner_text("#status") == "Hello, Grace!"

    requests = engine.requests
    assert len(requests) == 4
    assert offered(requests[0])["parameters"]["required"] == ["actions"]
    # The `computer` tool has no display size: 1024x768 until a screenshot shows the real one.
    assert "1024x768" in offered(requests[0])["description"]
    for request in requests[1:]:
        assert f"{WIDTH}x{HEIGHT}" in offered(request)["description"]
        newest = Image.open(io.BytesIO(base64.b64decode(images_in(request["messages"])[-1].split(",", 1)[1])))
        assert newest.format == "PNG" and newest.size == (WIDTH, HEIGHT)
    assert len(images_in(requests[-1]["messages"])) == 3


# ---- the tool entry and the call item --------------------------------------------------------

def test_tool_entries_checked_and_echoed(client: OpenAI, script: Script) -> None:
    r = client.responses.create(model=MODEL, input="hi", tools=[PREVIEW, {"type": "function", "name": "f"}])
    check_response(r)
    assert wire(r)["tools"][0] == PREVIEW
    r = client.responses.create(model=MODEL, input="hi", tools=[{"type": "computer"}])
    check_response(r)
    assert wire(r)["tools"] == [{"type": "computer"}]

    bad = [
        ({"type": "computer_use_preview", "display_height": 10, "environment": "mac"},
         "tools[0].display_width", "missing_required_parameter"),
        ({**PREVIEW, "environment": "amiga"}, "tools[0].environment", "invalid_value"),
        ({**PREVIEW, "display_width": 0}, "tools[0].display_width", "integer_below_min_value"),
        ({**PREVIEW, "display_height": "tall"}, "tools[0].display_height", "invalid_type"),
        ({**PREVIEW, "zoom": 2}, "tools[0].zoom", "unknown_parameter"),
        ({"type": "computer", "display_width": 800}, "tools[0].display_width", "unknown_parameter"),
    ]
    for tool, param, code in bad:
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model=MODEL, input="hi", tools=[tool])
        assert (e.value.param, e.value.code) == (param, code), tool
    # One computer tool per request: both would be the model's `computer` function.
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, input="hi", tools=[PREVIEW, {"type": "computer"}])
    assert e.value.param == "tools" and "computer" in e.value.message
    assert len(script.requests) == 2  # the two valid requests only


def test_call_item_ends_the_response(client: OpenAI, script: Script, engine: ScriptedEngine) -> None:
    script.add(computer({"type": "scroll", "x": 10.4, "y": 20, "scroll_y": 300, "speed": "fast"}))
    r = client.responses.create(model=MODEL, input="scroll down", tools=[PREVIEW],
                                tool_choice={"type": "computer"})
    check_response(r)
    assert r.status == "completed" and len(r.output) == 1
    item = wire(r)["output"][0]
    assert item == {"id": item["id"], "type": "computer_call", "call_id": item["call_id"],
                    "action": {"type": "scroll", "x": 10, "y": 20, "scroll_x": 0, "scroll_y": 300},
                    "pending_safety_checks": [], "status": "completed"}
    assert r.output[0].action.scroll_y == 300  # the SDK's typed action
    assert engine.requests[0]["tool_choice"] == {"type": "function", "function": {"name": "computer"}}
    assert client.responses.retrieve(r.id).model_dump() == r.model_dump()

    # Continued inline (no previous_response_id): the call echoed back, then its screenshot.
    shot = png((WIDTH, HEIGHT))
    script.add({"content": "Scrolled."})
    r2 = client.responses.create(model=MODEL, tools=[PREVIEW], input=[
        {"role": "user", "content": "scroll down"}, item, screenshot_output(item["call_id"], image_url=data_url(shot))])
    check_response(r2)
    assert r2.output_text == "Scrolled."
    messages = engine.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == {"action": item["action"]}
    assert images_in(messages) == [data_url(shot)]


def test_computer_tool_uses_the_screenshot_size(client: OpenAI, script: Script, engine: ScriptedEngine) -> None:
    shot = png((800, 600))
    call = {"type": "computer_call", "id": "cu_1", "call_id": "call_1", "actions": [{"type": "screenshot"}],
            "pending_safety_checks": [], "status": "completed"}
    script.add(computer(actions=[{"type": "click", "button": "right", "x": 900, "y": 10}]),
               computer(actions=[{"type": "click", "button": "right", "x": 790, "y": 10},
                                 {"type": "keypress", "keys": ["CTRL", "C"]}]))
    r = client.responses.create(model=MODEL, tools=[{"type": "computer"}], input=[
        {"role": "user", "content": "copy"}, call, screenshot_output("call_1", image_url=data_url(shot))])
    check_response(r)
    [item] = wire(r)["output"]
    assert item["type"] == "computer_call" and "action" not in item
    assert item["actions"] == [{"type": "click", "button": "right", "x": 790, "y": 10},
                               {"type": "keypress", "keys": ["CTRL", "C"]}]
    first, second = engine.requests
    assert "800x600" in offered(first)["description"]
    assert "'actions[0].x' is 900, off the display" in second["messages"][-1]["content"]


def test_invalid_actions_are_told_to_the_model(client: OpenAI, script: Script, engine: ScriptedEngine) -> None:
    script.add(computer({"type": "fly", "x": 1, "y": 1}),
               computer({"type": "click", "button": "left", "x": WIDTH, "y": 5}),
               computer({"type": "type", "text": "hello"}))
    response, events = streamed(client, model=MODEL, input="type hello", tools=[PREVIEW])
    assert response["status"] == "completed"
    [item] = response["output"]  # the invalid calls never reach the client
    assert item["action"] == {"type": "type", "text": "hello"}
    assert {e["output_index"] for e in events if "output_index" in e} == {0}
    first, second, third = engine.requests
    assert len(first["messages"]) == 1
    told = [m for m in third["messages"] if m["role"] == "tool"]
    assert len(told) == 2
    assert "'action.type' is \"fly\"" in told[0]["content"] and "640x400" in told[0]["content"]
    assert "'action.x' is 640, off the display: it must be from 0 to 639" in told[1]["content"]
    assert second["messages"][1]["tool_calls"][0]["function"]["name"] == "computer"
    stored = client.responses.retrieve(response["id"])
    assert [o.type for o in stored.output] == ["computer_call"]

    # Missing fields, several actions in one preview call, and non-JSON arguments fail the
    # response at the third invalid call, saying why.
    script.reset()
    script.add(computer({"type": "keypress"}), computer(actions=[{"type": "wait"}, {"type": "wait"}]),
               computer(raw="click at 5,5"))
    r = client.responses.create(model=MODEL, input="go", tools=[PREVIEW])
    check_response(r)
    assert r.status == "failed" and r.output == []
    assert r.error.code == "server_error"
    assert r.error.message == ("The model made 3 invalid computer actions in a row; the last: the arguments are "
                               "not valid JSON.")
    told = [m["content"] for m in engine.requests[-1]["messages"] if m["role"] == "tool"]
    assert "'action.keys' must be a non-empty list" in told[0] and "exactly one action" in told[1]


def test_one_computer_call_per_response(client: OpenAI, script: Script) -> None:
    script.add({"tool_calls": [{"name": "computer", "arguments": {"action": {"type": "screenshot"}}},
                               {"name": "computer", "arguments": {"action": {"type": "wait"}}},
                               {"name": "lookup", "arguments": {"q": "x"}}]})
    r = client.responses.create(model=MODEL, input="go", tools=[PREVIEW, {"type": "function", "name": "lookup"}])
    check_response(r)
    # (The function call's item opens while the engine still streams, so it comes first.)
    assert sorted((o.type, o.action.type if o.type == "computer_call" else o.name) for o in r.output) == [
        ("computer_call", "screenshot"), ("function_call", "lookup")]


# ---- screenshots by file id, include, errors --------------------------------------------------

def test_screenshot_by_file_id_and_include(client: OpenAI, script: Script, engine: ScriptedEngine) -> None:
    shot = png((64, 48), (200, 40, 40))
    uploaded = client.files.create(file=("s.png", shot, "image/png"), purpose="vision")
    call = {"type": "computer_call", "call_id": "call_f", "action": {"type": "screenshot"},
            "pending_safety_checks": [], "status": "completed"}
    script.add({"content": "I see a red screen."})
    r = client.responses.create(model=MODEL, tools=[PREVIEW], input=[
        {"role": "user", "content": "look"}, call, screenshot_output("call_f", file_id=uploaded.id)])
    check_response(r)
    assert images_in(engine.requests[-1]["messages"]) == [data_url(shot)]

    plain = client.responses.input_items.list(r.id, order="asc").data
    assert plain[2].output.file_id == uploaded.id and plain[2].output.image_url is None
    listed = client.responses.input_items.list(r.id, order="asc",
                                               include=["computer_call_output.output.image_url"]).data
    assert listed[2].type == "computer_call_output" and listed[2].call_id == "call_f"
    assert listed[2].output.file_id == uploaded.id and listed[2].output.image_url == data_url(shot)

    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model=MODEL, tools=[PREVIEW], input=[
            call, screenshot_output("call_f", file_id="file-nope")])
    assert e.value.param == "input[1].output.file_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, tools=[PREVIEW], input=[
            call, screenshot_output("call_f", image_url="data:image/png;base64,@@@")])
    assert e.value.param == "input[1].output.image_url"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model=MODEL, tools=[PREVIEW], input=[
            call, {"type": "computer_call_output", "call_id": "call_f", "output": {"type": "computer_screenshot"}}])
    assert e.value.param == "input[1].output"


# ---- a model that takes no images -------------------------------------------------------------

@pytest.fixture(scope="module")
def blind_server(engine: ScriptedEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("blind")
    config = data / "responsa.toml"
    config.write_text(f'[backends.blind]\nbase_url = "{engine.base_url}"\nimages = false\n\n[models]\n"*" = "blind"\n')
    proc = ServerProcess(data, "--config", str(config), "--api-key", KEY_A).start()
    yield proc
    proc.stop()


def test_model_without_images_gets_400(blind_server: ServerProcess, script: Script) -> None:
    blind = OpenAI(base_url=blind_server.base_url, api_key=KEY_A, max_retries=0)
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as e:
            blind.responses.create(model="text-only", input="click the button", tools=[PREVIEW], stream=stream)
        assert (e.value.param, e.value.code) == ("tools", "unsupported_image_input")
        assert "does not accept image input" in e.value.message
    call = {"type": "computer_call", "call_id": "c", "action": {"type": "screenshot"}, "pending_safety_checks": [],
            "status": "completed"}
    with pytest.raises(openai.BadRequestError) as e:
        blind.responses.create(model="text-only", input=[call, screenshot_output("c", image_url=data_url(png((4, 4))))])
    assert (e.value.param, e.value.code) == ("input[1].output", "unsupported_image_input")
    assert script.requests == []  # the engine was never asked
