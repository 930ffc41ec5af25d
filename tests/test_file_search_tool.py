"""The file_search tool through the official SDK: plain, streamed and background responses.

The scripted engine plays the model (it calls `file_search`, then answers citing `[1]`); the
vector store is real, ingested through the hashed-words embeddings engine of
test_vector_stores.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from harness import KEY_A, KEY_B, ScriptedEngine, ServerProcess, check_events, check_response, types_of, wire
from openai import OpenAI
from test_vector_stores import Embeddings

TIDES = "Ocean tides are caused by the gravity of the moon and the sun pulling on the sea."
BREAD = "Sourdough bread rises because wild yeast ferments the dough."


@pytest.fixture(scope="module")
def engine() -> Iterator[ScriptedEngine]:
    server = ScriptedEngine().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embeddings]:
    server = Embeddings().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(engine: ScriptedEngine, embedder: Embeddings,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("file-search"), "--upstream-base-url", engine.base_url,
                         "--api-key", KEY_A, "--api-key", KEY_B, "--embeddings-base-url", embedder.url + "/v1",
                         "--embeddings-model", "hashed").start()
    yield proc
    proc.stop()


@pytest.fixture
def script(engine: ScriptedEngine) -> Iterator:
    engine.script.reset()
    yield engine.script
    engine.script.reset()


@pytest.fixture(scope="module")
def store(server: ServerProcess) -> tuple[str, dict[str, str]]:
    client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    vs = client.vector_stores.create(name="docs")
    ids = {}
    for name, text in (("tides.md", TIDES), ("bread.txt", BREAD)):
        ids[name] = client.files.create(file=(name, text.encode()), purpose="assistants").id
        assert client.vector_stores.files.create_and_poll(ids[name], vector_store_id=vs.id,
                                                          poll_interval_ms=20).status == "completed"
    return vs.id, ids


def _client(server: ServerProcess, key: str = KEY_A) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def _search(*queries: str) -> dict:
    return {"tool_calls": [{"name": "file_search", "arguments": {"queries": list(queries)}}]}


ANSWER = "Tides come from the moon's gravity [1]."


def test_search_cite_and_include(server: ServerProcess, script, store: tuple[str, dict[str, str]]) -> None:
    store_id, ids = store
    script.add(_search("what causes tides"), {"content": ANSWER})
    tool = {"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 2}
    r = _client(server).responses.create(model="chat", input="Why are there tides?", tools=[tool],
                                         include=["file_search_call.results"])
    check_response(r)
    assert r.status == "completed" and [o.type for o in r.output] == ["file_search_call", "message"]
    call = r.output[0]
    assert call.type == "file_search_call" and call.id.startswith("fs_") and call.status == "completed"
    assert call.queries == ["what causes tides"]
    assert call.results is not None and 1 <= len(call.results) <= 2
    assert call.results[0].file_id == ids["tides.md"] and call.results[0].filename == "tides.md"
    assert call.results[0].text == TIDES and 0 < (call.results[0].score or 0) <= 1
    text = r.output[1].content[0]  # type: ignore[union-attr]
    assert text.text == ANSWER
    assert [wire(a) for a in text.annotations] == [  # type: ignore[union-attr]
        {"type": "file_citation", "file_id": ids["tides.md"], "filename": "tides.md", "index": ANSWER.index("[1]")}]
    assert wire(r)["tools"][0]["vector_store_ids"] == [store_id]
    # The model got the function and then the results, numbered, as the function's output.
    first, second = script.requests
    assert first["tools"][0]["function"]["name"] == "file_search"
    told = second["messages"][-1]
    assert told["role"] == "tool" and "[1] tides.md" in told["content"] and TIDES in told["content"]
    # The stored response is the same, and the note the model read is not in it.
    stored = _client(server).responses.retrieve(r.id)
    assert [o.type for o in stored.output] == ["file_search_call", "message"]


def test_results_only_when_included(server: ServerProcess, script, store: tuple[str, dict[str, str]]) -> None:
    store_id, _ = store
    script.add(_search("sourdough"), {"content": "It is the yeast."})
    raw = _client(server).responses.with_raw_response.create(
        model="chat", input="bread?", tools=[{"type": "file_search", "vector_store_ids": [store_id]}])
    r = raw.parse()
    assert "x-responsa-ignored-tools" not in raw.headers
    assert r.output[0].type == "file_search_call" and r.output[0].results is None  # type: ignore[union-attr]
    assert r.output[1].content[0].annotations == []  # type: ignore[union-attr]


def test_streamed_events(server: ServerProcess, script, store: tuple[str, dict[str, str]]) -> None:
    store_id, ids = store
    script.add(_search("moon gravity"), {"content": ANSWER})
    events = [wire(e) for e in _client(server).responses.create(
        model="chat", input="tides?", stream=True, include=["file_search_call.results"],
        tools=[{"type": "file_search", "vector_store_ids": [store_id]}])]
    check_events(events)
    call_events = [e for e in events if e.get("output_index") == 0]
    assert types_of(call_events) == [
        "response.output_item.added", "response.file_search_call.in_progress",
        "response.file_search_call.searching", "response.file_search_call.completed", "response.output_item.done"]
    assert call_events[0]["item"]["status"] == "in_progress"
    assert call_events[-1]["item"]["results"][0]["file_id"] == ids["tides.md"]
    [added] = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert added["annotation"]["file_id"] == ids["tides.md"] and added["annotation_index"] == 0
    done = events[-1]["response"]
    assert done["output"][1]["content"][0]["annotations"][0]["type"] == "file_citation"


def test_background(server: ServerProcess, script, store: tuple[str, dict[str, str]]) -> None:
    store_id, ids = store
    script.add(_search("tides"), {"content": ANSWER})
    client = _client(server)
    r = client.responses.create(model="chat", input="tides?", background=True,
                                include=["file_search_call.results"],
                                tools=[{"type": "file_search", "vector_store_ids": [store_id]}])
    deadline = time.time() + 30
    while r.status in ("queued", "in_progress") and time.time() < deadline:
        time.sleep(0.05)
        r = client.responses.retrieve(r.id)
    assert r.status == "completed"
    assert [o.type for o in r.output] == ["file_search_call", "message"]
    assert r.output[0].results[0].file_id == ids["tides.md"]  # type: ignore[union-attr,index]


def test_filters_and_other_keys(server: ServerProcess, script, store: tuple[str, dict[str, str]]) -> None:
    store_id, _ = store
    # Another key's store is a 404, and nothing runs.
    with pytest.raises(openai.NotFoundError):
        _client(server, KEY_B).responses.create(model="chat", input="x",
                                                tools=[{"type": "file_search", "vector_store_ids": [store_id]}])
    assert script.requests == []
    bad = [({"type": "file_search"}, "tools[0].vector_store_ids"),
           ({"type": "file_search", "vector_store_ids": [store_id], "max_num_results": 0},
            "tools[0].max_num_results"),
           ({"type": "file_search", "vector_store_ids": [store_id], "filters": {"type": "near"}},
            "tools[0].filters.type"),
           ({"type": "file_search", "vector_store_ids": [store_id], "colour": 1}, "tools[0].colour")]
    for tool, param in bad:
        with pytest.raises(openai.BadRequestError) as e:
            _client(server).responses.create(model="chat", input="x", tools=[tool])  # type: ignore[list-item]
        assert e.value.body["param"] == param, e.value.body  # type: ignore[index]
    # A filter no file matches: the search finds nothing and the model is told so.
    script.add(_search("tides"), {"content": "Nothing found."})
    r = _client(server).responses.create(
        model="chat", input="tides?", include=["file_search_call.results"],
        tools=[{"type": "file_search", "vector_store_ids": [store_id],
                "filters": {"type": "eq", "key": "kind", "value": "none"}}])
    assert r.output[0].results == []  # type: ignore[union-attr]
    assert "No results" in script.requests[-1]["messages"][-1]["content"]
