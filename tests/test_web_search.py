"""The web_search tool against a live server, a scripted engine and test search providers (SearXNG
and Brave over real HTTP, in their JSON shapes), with the pages their results link to."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from harness import (
    KEY_A,
    ServerProcess,
    ThreadServer,
    check_events,
    check_response,
    run_closing,
    types_of,
    wait_for,
    wire,
)
from openai import OpenAI
from search_server import BRAVE_TOKEN, Doc, SearchState, search_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from responsa.backends.scripted import Script, scripted_upstream_app

SOURCES = "web_search_call.action.sources"


class Backend(ThreadServer):
    """One loopback server: the scripted Chat Completions engine under /v1, the test search
    providers and the pages of their results."""

    def __init__(self) -> None:
        self.script = Script()
        self.search = SearchState()
        super().__init__(Starlette(routes=[*scripted_upstream_app(self.script).routes,
                                           *search_app(self.search).routes]))


class PrivatePage(ThreadServer):
    """A page on another loopback address (127.0.0.2): private, and not allowed to the server."""

    def __init__(self) -> None:
        self.hits: list[str] = []

        async def serve(request: Request) -> Response:
            self.hits.append(request.url.path)
            return HTMLResponse("<title>Internal</title><p>secret admin panel</p>")

        super().__init__(Starlette(routes=[Route("/{name}", serve)]), host="127.0.0.2")


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    server = Backend().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def private_page() -> Iterator[PrivatePage]:
    server = PrivatePage().start()
    yield server
    server.stop()


def _serve(backend: Backend, tmp: pytest.TempPathFactory, name: str, *args: str,
           env: dict[str, str] | None = None) -> Iterator[ServerProcess]:
    # The test pages are on 127.0.0.1 (or localhost), allowed here; 127.0.0.2 stays refused by the guard.
    proc = ServerProcess(tmp.mktemp(name), "--upstream-base-url", backend.url + "/v1", "--api-key", KEY_A,
                         "--allow-private-address", "127.0.0.1/32", "--allow-private-address", "::1/128", *args,
                         env=env)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def server(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _serve(backend, tmp_path_factory, "searxng", "--web-search-provider", "searxng",
                      "--web-search-url", backend.url)


@pytest.fixture
def state(backend: Backend) -> Iterator[SearchState]:
    backend.script.reset()
    backend.search.reset()
    yield backend.search
    backend.script.reset()


@pytest.fixture
def script(backend: Backend, state: SearchState) -> Script:
    return backend.script


@pytest.fixture
def client(server: ServerProcess, state: SearchState) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)


def search(query: str) -> dict:
    return {"tool_calls": [{"name": "web_search", "arguments": {"query": query}}]}


def call(name: str, **arguments: str) -> dict:
    return {"tool_calls": [{"name": name, "arguments": arguments}]}


def corpus(backend: Backend) -> tuple[str, str]:
    """Two documents about asyncio: one served on 127.0.0.1, one on another host (never fetched)."""
    page = backend.url + "/pages/asyncio"
    backend.search.docs.extend([
        Doc(page, "asyncio — Asynchronous I/O", "asyncio is a library to write concurrent code using async/await."),
        Doc("https://example.org/asyncio-tips", "Ten asyncio tips", "Tips for concurrent asyncio event loops."),
        Doc("https://example.org/cooking", "Cooking pasta", "Boil water."),
    ])
    backend.search.pages["asyncio"] = ("text/html", (
        "<!doctype html><html><head><title>asyncio docs</title><style>p {color: red}</style>"
        "<script>var secret = 'not text';</script></head><body><h1>asyncio</h1>"
        "<p>asyncio is used as a foundation for multiple Python asynchronous frameworks.</p>"
        "<p>It provides high-level APIs to run Python coroutines concurrently.</p></body></html>"))
    return page, "https://example.org/asyncio-tips"


def tool_messages(request: dict) -> list[dict]:
    return [m for m in request["messages"] if m["role"] == "tool"]


def test_search_then_answer_with_citations(backend: Backend, client: OpenAI, script: Script,
                                           state: SearchState) -> None:
    page, other = corpus(backend)
    answer = f"asyncio runs coroutines concurrently ([asyncio docs]({page})). See also {other}."
    script.add(search("asyncio concurrent"), {"content": answer})
    raw = client.responses.with_raw_response.create(model="chat", input="What is asyncio?",
                                                    tools=[{"type": "web_search"}])
    assert "x-responsa-ignored-tools" not in raw.headers
    r = raw.parse()
    check_response(r)
    assert r.status == "completed" and [o.type for o in r.output] == ["web_search_call", "message"]
    ws = r.output[0]
    assert ws.id.startswith("ws_") and ws.status == "completed"
    assert wire(ws)["action"] == {"type": "search", "query": "asyncio concurrent",
                                  "queries": ["asyncio concurrent"]}  # no sources unless included
    text = r.output[1].content[0]
    assert text.text == answer
    first, second = (wire(a) for a in text.annotations)
    link = f"[asyncio docs]({page})"
    assert first == {"type": "url_citation", "start_index": answer.index(link),
                     "end_index": answer.index(link) + len(link), "title": "asyncio — Asynchronous I/O", "url": page}
    assert answer[second["start_index"]:second["end_index"]] == other and second["title"] == "Ten asyncio tips"

    [searched] = state.searches()
    assert searched["path"] == "/search"
    assert searched["params"] == {"q": "asyncio concurrent", "format": "json"}
    offered = [t["function"]["name"] for t in script.requests[0]["tools"]]
    assert offered == ["web_search", "open_page", "find_in_page"]
    # The model read the results as the call's output: titles, URLs and snippets.
    [told] = tool_messages(script.requests[1])
    assert told["tool_call_id"] == ws.id
    assert f"URL: {page}" in told["content"] and "Ten asyncio tips" in told["content"]
    assert "async/await" in told["content"] and "Cooking" not in told["content"]
    assert script.requests[1]["messages"][-2]["tool_calls"][0]["function"] == {
        "name": "web_search", "arguments": json.dumps({"query": "asyncio concurrent"})}
    assert client.responses.retrieve(r.id).model_dump() == r.model_dump()

    # A later response sees the call, summed up (what it found is no longer at hand).
    script.add({"content": "ok"})
    client.responses.create(model="chat", input="thanks", previous_response_id=r.id,
                            tools=[{"type": "web_search"}])
    [later] = tool_messages(script.requests[-1])
    assert later == {"role": "tool", "tool_call_id": ws.id,
                     "content": 'Searched the web for "asyncio concurrent".'}


def test_streamed_events_and_sources(backend: Backend, client: OpenAI, script: Script) -> None:
    page, other = corpus(backend)
    answer = f"See [the docs]({page})."
    script.add(search("asyncio"), {"content": answer})
    events = [wire(e) for e in client.responses.create(
        model="chat", input="asyncio?", tools=[{"type": "web_search_preview"}], include=[SOURCES], stream=True)]
    check_events(events)
    call_events = [e for e in events if e.get("output_index") == 0]
    assert types_of(call_events) == [
        "response.output_item.added", "response.web_search_call.in_progress",
        "response.web_search_call.searching", "response.web_search_call.completed", "response.output_item.done"]
    added, done = call_events[0]["item"], call_events[-1]["item"]
    assert added["status"] == "in_progress" and added["action"]["type"] == "search"
    assert "sources" not in added["action"]
    assert done["status"] == "completed"
    assert done["action"]["sources"] == [{"type": "url", "url": page}, {"type": "url", "url": other}]
    message = [e for e in events if e.get("output_index") == 1]
    kinds = types_of(message)
    assert kinds.index("response.output_text.annotation.added") < kinds.index("response.output_text.done")
    annotation = next(e for e in message if e["type"] == "response.output_text.annotation.added")
    assert annotation["annotation_index"] == 0 and annotation["content_index"] == 0
    assert annotation["annotation"]["url"] == page and annotation["annotation"]["start_index"] == 4
    final = events[-1]["response"]
    assert final["output"][1]["content"][0]["annotations"] == [annotation["annotation"]]
    assert final["output"][0]["action"]["sources"][0]["url"] == page
    assert wire(client.responses.retrieve(final["id"]))["output"] == final["output"]


def test_background_run(client: OpenAI, script: Script, backend: Backend) -> None:
    page, _ = corpus(backend)
    script.add(search("asyncio"), {"content": f"From {page}: coroutines."})
    r = client.responses.create(model="chat", input="asyncio?", tools=[{"type": "web_search"}], background=True)
    assert r.status in ("queued", "in_progress")
    done = wait_for(lambda: (x := client.responses.retrieve(r.id)).status == "completed" and x)
    check_response(done)
    assert [o.type for o in done.output] == ["web_search_call", "message"]
    assert done.output[0].status == "completed"
    assert wire(done.output[1].content[0].annotations[0])["url"] == page
    replay = [wire(e) for e in client.responses.retrieve(r.id, stream=True)]
    check_events(replay)
    assert "response.web_search_call.searching" in types_of(replay)


def test_open_page_and_find_in_page(backend: Backend, client: OpenAI, script: Script, state: SearchState) -> None:
    page, _ = corpus(backend)
    script.add(search("asyncio"), call("open_page", url=page), call("find_in_page", url=page, pattern="coroutines"),
               {"content": f"Per [the page]({page}), asyncio runs coroutines."})
    r = client.responses.create(model="chat", input="asyncio?", tools=[{"type": "web_search"}])
    check_response(r)
    assert [o.type for o in r.output] == ["web_search_call"] * 3 + ["message"]
    assert [wire(o)["action"] for o in r.output[1:3]] == [
        {"type": "open_page", "url": page}, {"type": "find_in_page", "url": page, "pattern": "coroutines"}]
    assert all(o.status == "completed" for o in r.output[:3])
    opened, found = tool_messages(script.requests[-1])[1:]
    assert opened["content"].startswith(f"Title: asyncio docs\nURL: {page}\n")
    assert "foundation for multiple Python asynchronous frameworks" in opened["content"]
    assert "not text" not in opened["content"] and "color" not in opened["content"]
    assert "high-level APIs to run Python coroutines concurrently" in found["content"]
    # The page was fetched once (find_in_page reused it), and cited under its search title.
    assert [q["path"] for q in state.requests].count("/pages/asyncio") == 1
    assert wire(r.output[3].content[0].annotations[0])["title"] == "asyncio — Asynchronous I/O"


def test_guard_refuses_a_private_result_page(backend: Backend, client: OpenAI, script: Script,
                                             state: SearchState, private_page: PrivatePage) -> None:
    secret = private_page.url + "/admin"
    state.docs.append(Doc(secret, "Admin", "The intranet admin panel."))
    script.add(search("admin panel"), call("open_page", url=secret), {"content": "I could not open it."})
    r = client.responses.create(model="chat", input="open the admin panel", tools=[{"type": "web_search"}])
    check_response(r)
    assert r.status == "completed" and [o.status for o in r.output[:2]] == ["completed", "failed"]
    assert wire(r.output[1])["action"] == {"type": "open_page", "url": secret}
    assert private_page.hits == []
    told = tool_messages(script.requests[-1])[1]["content"]
    assert told.startswith("Error: ") and "private, loopback or link-local" in told
    assert r.output_text == "I could not open it." and r.output[2].content[0].annotations == []


def test_allowed_domains(backend: Backend, client: OpenAI, script: Script, state: SearchState) -> None:
    corpus(backend)
    state.docs.append(Doc("https://docs.python.org/3/library/asyncio.html", "asyncio (python.org)",
                          "asyncio reference"))
    tool = {"type": "web_search", "filters": {"allowed_domains": ["https://Python.org/"]}}
    script.add(search("asyncio"), call("open_page", url="https://example.org/asyncio-tips"), {"content": "ok"})
    r = client.responses.create(model="chat", input="asyncio?", tools=[tool], include=[SOURCES])
    check_response(r)
    assert wire(r)["tools"] == [{"type": "web_search", "filters": {"allowed_domains": ["python.org"]}}]
    assert wire(r.output[0])["action"]["sources"] == [
        {"type": "url", "url": "https://docs.python.org/3/library/asyncio.html"}]
    assert state.searches()[0]["params"]["q"] == "asyncio site:python.org"
    # A page outside the domains is not opened.
    assert r.output[1].status == "failed" and "/pages/" not in str(state.requests)
    results, refused = tool_messages(script.requests[-1])
    assert "example.org" not in results["content"] and "docs.python.org" in results["content"]
    assert "not in the allowed domains (python.org)" in refused["content"]
    assert "Results come only from python.org." in script.requests[0]["tools"][0]["function"]["description"]


def test_allowed_domains_hold_across_redirects(backend: Backend, client: OpenAI, script: Script,
                                               state: SearchState) -> None:
    page, _ = corpus(backend)
    via_localhost = page.replace("127.0.0.1", "localhost")
    away = f"http://localhost:{backend.port}/redirect?to={page}"
    script.add(call("open_page", url=via_localhost), call("open_page", url=away), {"content": "ok"})
    r = client.responses.create(model="chat", input="x", tools=[
        {"type": "web_search", "filters": {"allowed_domains": ["localhost"]}}])
    assert [o.status for o in r.output[:2]] == ["completed", "failed"]
    opened, refused = tool_messages(script.requests[-1])
    assert opened["content"].startswith(f"Title: asyncio docs\nURL: {via_localhost}")
    assert refused["content"] == (f"Error: {away} redirects to {page}, which is not in the allowed domains "
                                  "(localhost).")


def test_provider_failures_are_told_to_the_model(server: ServerProcess, client: OpenAI, script: Script,
                                                 state: SearchState) -> None:
    state.fail(500, {"error": "engines exploded"})
    script.add(search("anything"), {"content": "The search failed, sorry."})
    r = client.responses.create(model="chat", input="search", tools=[{"type": "web_search"}])
    check_response(r)
    assert r.status == "completed" and r.output[0].status == "failed"
    assert r.output_text == "The search failed, sorry."
    told = tool_messages(script.requests[-1])[0]["content"]
    assert told == "Error: the web search failed: the search provider (searxng) answered HTTP 500: engines exploded."
    # An instance without the JSON format enabled answers 403; one that is not SearXNG, HTML.
    state.fail(403, "403 Forbidden")
    state.fail(200, "<html>hello</html>")
    script.add(search("a"), search("b"), {"content": "no"})
    r = client.responses.create(model="chat", input="search", tools=[{"type": "web_search"}])
    assert [o.status for o in r.output[:2]] == ["failed", "failed"] and r.status == "completed"
    first, second = tool_messages(script.requests[-1])
    assert "answered HTTP 403" in first["content"] and "not JSON search results" in second["content"]
    assert "does the instance allow the json format?" in server.log()
    # A failed search says so to a later turn, too.
    script.add({"content": "ok"})
    client.responses.create(model="chat", input="again?", previous_response_id=r.id)
    assert tool_messages(script.requests[-1])[0]["content"] == 'The web search for "a" failed.'


def test_tool_choice_and_offline_mode(backend: Backend, client: OpenAI, script: Script) -> None:
    corpus(backend)
    script.add(search("asyncio"), {"content": "ok"})
    r = client.responses.create(model="chat", input="asyncio?", tools=[{"type": "web_search"}],
                                tool_choice={"type": "web_search_preview"})
    assert wire(r)["tool_choice"] == {"type": "web_search_preview"}
    first = script.requests[0]
    assert first["tool_choice"] == "required"
    assert [t["function"]["name"] for t in first["tools"]] == ["web_search", "open_page", "find_in_page"]
    assert script.requests[1]["tool_choice"] == "auto"
    # external_web_access: false keeps to the provider's index: no pages opened.
    script.add({"content": "ok"})
    client.responses.create(model="chat", input="x", tools=[{"type": "web_search", "external_web_access": False}])
    assert [t["function"]["name"] for t in script.requests[-1]["tools"]] == ["web_search"]


def test_bad_calls_are_sent_back_to_the_model(client: OpenAI, script: Script, state: SearchState) -> None:
    script.add(call("web_search", query=" "), call("open_page"), {"content": "gave up"})
    r = client.responses.create(model="chat", input="x", tools=[{"type": "web_search"}])
    assert [o.type for o in r.output] == ["message"] and r.output_text == "gave up"
    told = tool_messages(script.requests[-1])
    assert [m["content"] for m in told] == ["Error: give a non-empty `query`. Nothing was done.",
                                            "Error: give the page's `url`. Nothing was done."]
    assert state.requests == []


@pytest.mark.parametrize(("tool", "param", "code"), [
    ({"type": "web_search", "search_context_size": "huge"}, "tools[0].search_context_size", "invalid_value"),
    ({"type": "web_search", "colour": "red"}, "tools[0].colour", "unknown_parameter"),
    ({"type": "web_search", "search_content_types": "text"}, "tools[0].search_content_types", "invalid_type"),
    ({"type": "web_search_preview", "image_settings": {}}, "tools[0].image_settings", "unknown_parameter"),
    ({"type": "web_search", "image_settings": {"max_results": 0}}, "tools[0].image_settings.max_results",
     "integer_below_min_value"),
    ({"type": "web_search_preview", "filters": {}}, "tools[0].filters", "unknown_parameter"),
    ({"type": "web_search_preview", "user_location": {"city": "Paris"}}, "tools[0].user_location.type",
     "missing_required_parameter"),
    ({"type": "web_search", "user_location": {"type": "exact"}}, "tools[0].user_location.type", "invalid_value"),
    ({"type": "web_search", "user_location": {"country": "USA"}}, "tools[0].user_location.country",
     "invalid_value"),
    ({"type": "web_search", "user_location": {"town": "x"}}, "tools[0].user_location.town", "unknown_parameter"),
    ({"type": "web_search", "filters": {"allowed_domains": ["ok.com", "not a domain"]}},
     "tools[0].filters.allowed_domains[1]", "invalid_value"),
    ({"type": "web_search", "filters": {"allowed_domains": "ok.com"}}, "tools[0].filters.allowed_domains",
     "invalid_type"),
    ({"type": "web_search", "filters": {"blocked_domains": []}}, "tools[0].filters.blocked_domains",
     "unknown_parameter"),
    ({"type": "web_search", "external_web_access": "no"}, "tools[0].external_web_access", "invalid_type"),
    ({"type": "web_search_preview", "search_content_types": ["video"]}, "tools[0].search_content_types[0]",
     "invalid_value"),
])
def test_bad_tool_entries(client: OpenAI, tool: dict, param: str, code: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="chat", input="x", tools=[tool])
    assert (e.value.body["param"], e.value.body["code"]) == (param, code)


def test_entries_echo_as_checked(client: OpenAI, script: Script) -> None:
    tools = [{"type": "web_search_preview_2025_03_11", "search_context_size": "low", "search_content_types": ["text"],
              "user_location": {"type": "approximate", "city": "Paris", "country": "FR"}}]
    script.add({"content": "ok"})
    r = client.responses.create(model="chat", input="x", tools=tools)
    check_response(r)
    assert wire(r)["tools"] == tools


# ---- Brave ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def brave(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAI]:
    for proc in _serve(backend, tmp_path_factory, "brave", "--web-search-provider", "brave", "--web-search-url",
                       backend.url, env={"RESPONSA_WEB_SEARCH_API_KEY": BRAVE_TOKEN}):
        yield OpenAI(base_url=proc.base_url, api_key=KEY_A, max_retries=0)


def test_brave(backend: Backend, brave: OpenAI, script: Script, state: SearchState) -> None:
    page, other = corpus(backend)
    location = {"type": "approximate", "city": "Berlin", "region": "BE", "country": "de",
                "timezone": "Europe/Berlin"}
    script.add(search("asyncio"), {"content": f"See {page}."})
    r = brave.responses.create(model="chat", input="asyncio?", include=[SOURCES],
                               tools=[{"type": "web_search", "search_context_size": "low", "user_location": location}])
    check_response(r)
    assert r.output[0].status == "completed"
    assert [s["url"] for s in wire(r.output[0])["action"]["sources"]] == [page, other]
    [sent] = state.searches()
    assert sent["path"] == "/res/v1/web/search"
    assert sent["params"] == {"q": "asyncio", "count": "3", "country": "DE"}
    headers = sent["headers"]
    assert headers["x-subscription-token"] == BRAVE_TOKEN and headers["accept"] == "application/json"
    assert (headers["x-loc-city"], headers["x-loc-state"], headers["x-loc-country"], headers["x-loc-timezone"]) == (
        "Berlin", "BE", "DE", "Europe/Berlin")
    told = tool_messages(script.requests[-1])[0]["content"]
    assert "asyncio is a library" in told and "<strong>" not in told
    assert wire(r.output[1].content[0].annotations[0])["url"] == page


def test_brave_errors(backend: Backend, brave: OpenAI, script: Script, state: SearchState) -> None:
    state.fail(422, {"type": "ErrorResponse", "error": {"id": "x", "status": 422, "code": "SUBSCRIPTION_TOKEN_INVALID",
                                                         "detail": "The provided subscription token is invalid.",
                                                         "meta": {}}, "time": 1})
    script.add(search("asyncio"), {"content": "failed"})
    r = brave.responses.create(model="chat", input="asyncio?", tools=[{"type": "web_search"}])
    check_response(r)
    assert r.output[0].status == "failed" and r.status == "completed"
    assert tool_messages(script.requests[-1])[0]["content"] == (
        "Error: the web search failed: the search provider (brave) answered HTTP 422: The provided subscription "
        "token is invalid.")
    assert BRAVE_TOKEN not in json.dumps(wire(r))


# ---- no provider ----------------------------------------------------------------------------------

def test_without_a_provider_the_tool_stays_ignored(backend: Backend, tmp_path_factory: pytest.TempPathFactory,
                                                   state: SearchState, script: Script) -> None:
    for proc in _serve(backend, tmp_path_factory, "none"):
        script.add({"content": "plain answer"})
        r = httpx.post(proc.base_url + "/responses", headers={"Authorization": f"Bearer {KEY_A}"}, json={
            "model": "chat", "input": "x", "tools": [{"type": "web_search", "anything": 1}]})
        assert r.status_code == 200 and r.headers["x-responsa-ignored-tools"] == "web_search"
        assert r.json()["output"][0]["type"] == "message"
        assert "tools" not in script.requests[-1] and state.requests == []
        bad = httpx.post(proc.base_url + "/responses", headers={"Authorization": f"Bearer {KEY_A}"}, json={
            "model": "chat", "input": "x", "tools": [{"type": "web_search"}], "tool_choice": {"type": "web_search"}})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "unsupported_value"


def test_one_web_search_entry_per_request(client: OpenAI, script: Script) -> None:
    for tools, name in (([{"type": "web_search"}, {"type": "web_search_preview"}], "web_search"),
                        ([{"type": "web_search"}, {"type": "function", "name": "open_page"}], "open_page")):
        with pytest.raises(openai.BadRequestError) as e:
            client.responses.create(model="chat", input="x", tools=tools)
        assert e.value.body["param"] == "tools"
        assert e.value.body["message"] == f"Two tools offer a function named '{name}'."
    assert script.requests == []


def test_agents_sdk_web_search_tool(backend: Backend, server: ServerProcess, script: Script,
                                    state: SearchState) -> None:
    agents = pytest.importorskip("agents", reason="openai-agents is in the `clients` extra (./scripts/test)")
    page, _ = corpus(backend)
    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    agent = agents.Agent(name="searcher", instructions="Search, then answer.", model=agents.OpenAIResponsesModel(
        model="gpt-4.1", openai_client=client), tools=[agents.WebSearchTool(
            user_location={"type": "approximate", "city": "Paris"}, filters={"allowed_domains": ["127.0.0.1"]},
            search_context_size="high", search_content_types=["text"])])
    script.add(search("asyncio"), {"content": f"asyncio: [docs]({page})"})
    result = run_closing(agents.Runner.run(agent, "What is asyncio?"), client)
    assert result.final_output == f"asyncio: [docs]({page})"
    calls = [i.raw_item for i in result.new_items if i.type == "tool_call_item"]
    assert [(c.type, c.status, c.action.type, c.action.query) for c in calls] == [
        ("web_search_call", "completed", "search", "asyncio")]
    assert state.searches()[0]["params"]["q"] == "asyncio site:127.0.0.1"
    message = next(i.raw_item for i in result.new_items if i.type == "message_output_item")
    assert [a.url for a in message.content[0].annotations] == [page]


def test_in_a_conversation(backend: Backend, client: OpenAI, script: Script) -> None:
    page, _ = corpus(backend)
    conv = client.conversations.create()
    script.add(search("asyncio"), {"content": f"See {page}."}, {"content": "You are welcome."})
    r = client.responses.create(model="chat", input="asyncio?", conversation=conv.id, tools=[{"type": "web_search"}],
                                include=[SOURCES])
    assert r.output[0].type == "web_search_call"
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.type for i in items] == ["message", "web_search_call", "message"]
    assert wire(items[1])["action"]["sources"][0]["url"] == page
    client.responses.create(model="chat", input="thanks", conversation=conv.id, tools=[{"type": "web_search"}])
    [summary] = tool_messages(script.requests[-1])
    assert summary["content"].startswith('Searched the web for "asyncio". Sources: ' + page)


def test_pages_that_cannot_be_read(backend: Backend, client: OpenAI, script: Script, state: SearchState,
                                   private_page: PrivatePage) -> None:
    base = backend.url + "/pages/"
    state.pages.update({"logo": ("image/png", b"\x89PNG\r\n\x1a\n"), "notes": ("text/plain", "plain  notes\n\n\n\nend"),
                        "big": ("text/html", "<title>Big</title>" + "<p>lorem ipsum</p>" * 30000)})
    hop = f"{backend.url}/redirect?to={private_page.url}/admin"
    script.add(call("open_page", url=base + "missing"), call("open_page", url=base + "logo"),
               call("open_page", url=base + "notes"), call("find_in_page", url=base + "big", pattern="IPSUM"),
               call("open_page", url=hop), call("open_page", url="ftp://example.org/x"), {"content": "done"})
    r = client.responses.create(model="chat", input="x", tools=[{"type": "web_search", "search_context_size": "low"}])
    check_response(r)
    assert [o.status for o in r.output[:6]] == ["failed", "failed", "completed", "completed", "failed", "failed"]
    told = [m["content"] for m in tool_messages(script.requests[-1])]
    assert told[0] == f"Error: Opening {base}missing failed: HTTP 404."
    assert told[1] == f"Error: The page at {base}logo is not text (image/png)."
    assert told[2] == f"Title: {base}notes\nURL: {base}notes\n\nplain notes\n\nend"
    assert told[3].startswith(f'"IPSUM" in Big ({base}big):\n[1] lorem ipsum') and told[3].count("\n[") == 10
    assert told[4].startswith(f"Error: The page URL '{hop}' redirects to '127.0.0.2', a private")
    assert told[5] == "Error: The page URL must be an http(s) URL."
    assert private_page.hits == []


def test_unreachable_provider(backend: Backend, tmp_path_factory: pytest.TempPathFactory, script: Script) -> None:
    for proc in _serve(backend, tmp_path_factory, "dead", "--web-search-provider", "searxng",
                       "--web-search-url", "http://127.0.0.1:9"):
        client = OpenAI(base_url=proc.base_url, api_key=KEY_A, max_retries=0)
        script.add(search("x"), {"content": "no luck"})
        r = client.responses.create(model="chat", input="x", tools=[{"type": "web_search"}])
        assert r.status == "completed" and r.output[0].status == "failed"
        assert tool_messages(script.requests[-1])[0]["content"] == (
            "Error: the web search failed: the search provider (searxng) could not be reached.")
        assert "127.0.0.1:9" in proc.log()  # the address is in the server's log, not the model's context


def test_over_a_websocket(backend: Backend, client: OpenAI, script: Script) -> None:
    page, _ = corpus(backend)
    script.add(search("asyncio"), {"content": f"[docs]({page})"})
    with client.responses.connect() as conn:
        conn.response.create(model="chat", input="asyncio?", tools=[{"type": "web_search"}], store=False)
        events = []
        for event in conn:
            events.append(wire(event))
            if event.type in ("response.completed", "response.failed", "error"):
                break
    kinds = types_of(events)
    assert kinds[-1] == "response.completed"
    assert kinds.index("response.web_search_call.searching") < kinds.index("response.web_search_call.completed")
    assert events[-1]["response"]["output"][1]["content"][0]["annotations"][0]["url"] == page
