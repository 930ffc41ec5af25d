"""The web_search tool's pure parts: citations, domains, page text, provider answers, and how
web_search_call items reach the model (the live tests are in test_web_search.py)."""

from __future__ import annotations

import asyncio
import json

from harness import recording_events

from responsa.chat import to_messages, web_search_function
from responsa.hosted_calls import HostedCall
from responsa.searchproviders import Location, _location_headers, _results, plain, with_sites
from responsa.tools import ToolContext
from responsa.webpages import find_in_text, html_text
from responsa.websearch import WebSearchKind, WebSearchTool, _domain, in_domains


class NoProvider:
    name = "none"
    takes_location = False

    async def search(self, query: object) -> list:
        raise AssertionError("not searched")

    async def aclose(self) -> None:
        return None


def tool(**entry: object) -> WebSearchTool:
    return WebSearchTool({"type": "web_search", **entry}, NoProvider())


def test_citations_cover_markdown_links_and_bare_urls_of_sources_shown() -> None:
    t = tool()
    t.sources = {"https://a.example/x": "A", "https://b.example/": "B"}
    text = "See [the A page](https://a.example/x), also https://b.example. Not https://c.example/."
    cites = t.citations(text)
    assert cites == [
        {"type": "url_citation", "start_index": 4, "end_index": 37, "title": "A", "url": "https://a.example/x"},
        {"type": "url_citation", "start_index": text.index("https://b"), "end_index": text.index("https://b") + 17,
         "title": "B", "url": "https://b.example"}]
    assert text[4:37] == "[the A page](https://a.example/x)"
    assert tool().citations(text) == []  # nothing shown, nothing cited


def test_domains() -> None:
    assert _domain("Example.COM") == "example.com"
    assert _domain("https://docs.python.org/3/") == "docs.python.org"
    assert _domain("example.com.") == "example.com"
    assert _domain("not a domain") is None and _domain("") is None and _domain("http://") is None
    assert in_domains("https://docs.python.org/x", ("python.org",))
    assert in_domains("https://python.org", ("python.org",))
    assert not in_domains("https://notpython.org", ("python.org",))
    assert not in_domains("https://python.org.evil.com/", ("python.org",))
    assert in_domains("https://anything", ())
    assert with_sites("q", ()) == "q" and with_sites("q", ("a.com",)) == "q site:a.com"
    assert with_sites("q", ("a.com", "b.org")) == "q (site:a.com OR site:b.org)"


def test_html_text_and_find() -> None:
    title, text = html_text(b"<html><head><title> The  Title </title><script>x = 1</script></head><body>"
                            b"<h1>Head</h1><p>One &amp; two.</p><style>p{}</style><ul><li>a</li><li>b</li></ul>"
                            b"<noscript>enable js</noscript><!-- a comment --></body></html>")
    assert title == "The Title"
    assert text == "Head\n\nOne & two.\n\na\n\nb"
    assert html_text("<p>café</p>".encode("latin-1"), "latin-1") == ("", "café")
    assert html_text(b"") == ("", "") and html_text(b"   ") == ("", "")
    assert html_text('<meta charset="windows-1252"><p>na\u00efve</p>'.encode("cp1252")) == ("", "na\u00efve")
    assert html_text('<?xml version="1.0" encoding="utf-8"?><html><p>\u00e9t\u00e9</p></html>'.encode()) == (
        "", "\u00e9t\u00e9")
    page = "alpha " * 100 + "the Needle here " + "omega " * 100 + "needle again"
    found = find_in_text(page, "NEEDLE", around=10)
    assert found == ["...alpha the Needle here omeg...", "...ega omega needle again"]
    assert find_in_text(page, "absent") == [] and find_in_text(page, "") == []
    assert len(find_in_text("x " * 500, "x", limit=3, around=5)) == 3
    assert find_in_text("x x x", "x", around=5) == ["x x x"]  # one place, all three shown


def test_provider_answers_are_read_defensively() -> None:
    results = _results([{"url": "https://a.example", "title": "<strong>A</strong> &amp; b", "content": " c "},
                        {"url": "javascript:alert(1)", "title": "bad"}, {"title": "no url"}, "junk",
                        {"url": "https://b.example"}], "content")
    assert [(r.title, r.url, r.snippet) for r in results] == [("A & b", "https://a.example", "c"),
                                                            ("https://b.example", "https://b.example", "")]
    assert _results(None, "content") == [] and plain(None) == ""
    headers = _location_headers(Location(city="München", region="Bavaria", country="de", timezone="Europe/Berlin"))
    assert headers == {"X-Loc-Country": "DE", "X-Loc-Timezone": "Europe/Berlin"}


def test_offered_functions() -> None:
    names = [f["function"]["name"] for f in tool().functions()]
    assert names == ["web_search", "open_page", "find_in_page"]
    assert [f["function"]["name"] for f in tool(external_web_access=False).functions()] == ["web_search"]
    described = tool(filters={"allowed_domains": ["a.com", "b.org"]}).functions()[0]["function"]["description"]
    assert described.endswith("Results come only from a.com, b.org.")


def test_entry_check_normalises() -> None:
    kind = WebSearchKind(NoProvider())
    assert kind.check({"type": "web_search", "filters": {"allowed_domains": ["HTTPS://A.com/"]},
                       "user_location": None, "search_context_size": None}, "tools[0]") == {
        "type": "web_search", "filters": {"allowed_domains": ["a.com"]}}
    assert kind.check({"type": "web_search", "filters": {"allowed_domains": None}}, "tools[0]") == {
        "type": "web_search", "filters": {"allowed_domains": None}}


def test_web_search_calls_reach_the_model() -> None:
    user = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "q"}]}
    search = {"type": "web_search_call", "id": "ws_1", "status": "completed",
              "action": {"type": "search", "query": "cats", "sources": [{"type": "url", "url": "https://c.example"}]}}
    opened = {"type": "web_search_call", "id": "ws_2", "status": "failed",
              "action": {"type": "open_page", "url": "https://c.example"}}
    found = {"type": "web_search_call", "id": "ws_3", "status": "completed",
             "action": {"type": "find_in_page", "url": "https://c.example", "pattern": "x"}}
    echoed = {"type": "web_search_call", "id": "ws_4", "status": "completed",
              "action": {"type": "search", "queries": ["a", "b"]}}
    note = {"type": "hosted_call_output", "id": "ws_3", "output": "found x twice"}
    out = to_messages([user, search, opened, note, found, echoed])
    calls = [(m["tool_calls"][0]["id"], m["tool_calls"][0]["function"]) for m in out if m.get("tool_calls")]
    assert calls == [("ws_1", {"name": "web_search", "arguments": '{"query": "cats"}'}),
                     ("ws_2", {"name": "open_page", "arguments": '{"url": "https://c.example"}'}),
                     ("ws_3", {"name": "find_in_page", "arguments": '{"url": "https://c.example", "pattern": "x"}'}),
                     ("ws_4", {"name": "web_search", "arguments": '{"query": "a; b"}'})]
    results = [m["content"] for m in out if m["role"] == "tool"]
    assert results == ['Searched the web for "cats". Sources: https://c.example',
                       "Could not open https://c.example.", "found x twice", 'Searched the web for "a; b".']
    assert web_search_function({}) == ("web_search", json.dumps({"query": ""}))


def test_hosted_call_lifecycle_events() -> None:
    events, seen = recording_events()

    async def run() -> None:
        events.created()
        call = await HostedCall.start(events, {"id": "ws_1", "type": "web_search_call",
                                               "action": {"type": "search", "query": "q"}})
        call.completed(action={"type": "search", "query": "q", "sources": []})
        failing = await HostedCall.start(events, {"id": "ws_2", "type": "web_search_call",
                                                  "action": {"type": "open_page", "url": "https://x.example"}})
        failing.failed()
        ctx = ToolContext(events=events, history=[], settings=None)  # type: ignore[arg-type]
        failing.tell_model(ctx, "refused")
        assert ctx.model_notes == [(1, {"type": "hosted_call_output", "id": "ws_2", "output": "refused"})]
        events.completed({})
        await events.flush()

    asyncio.run(run())
    assert [e["type"] for e in seen][1:] == [
        "response.output_item.added", "response.web_search_call.in_progress", "response.web_search_call.searching",
        "response.web_search_call.completed", "response.output_item.done",
        "response.output_item.added", "response.web_search_call.in_progress", "response.web_search_call.searching",
        "response.output_item.done", "response.completed"]
    assert seen[1]["item"]["status"] == "in_progress" and seen[5]["item"]["status"] == "completed"
    assert seen[-2]["item"]["status"] == "failed"
