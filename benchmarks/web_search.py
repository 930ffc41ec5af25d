"""What a web_search call adds to a response, against the test SearXNG provider on loopback.

A live server (`responsa serve`, SQLite) in front of the scripted engine; the provider and the
pages are the test ones (tests/search_server.py), so this measures Responsa's own work: the
provider round trip, the result rendering, the item's events and store, and the engine turn
the call adds. Four kinds of responses, interleaved round by round:

- plain: one engine turn, no tool call;
- two turns: a search that finds nothing, then the answer;
- search + answer: `web_search` finds 5 results, then the answer cites one (url_citation);
- open_page + answer: the model opens a 30 KB HTML page (guarded fetcher), then answers.

    python benchmarks/web_search.py [rounds]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import KEY_A, ServerProcess, ThreadServer
from openai import OpenAI
from search_server import Doc, SearchState, search_app
from starlette.applications import Starlette

from responsa.backends.scripted import Script, scripted_upstream_app


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[max(0, int(len(values) * 0.95) - 1)]
    return f"median {statistics.median(values) * 1000:6.2f} ms  p95 {p95 * 1000:6.2f} ms"


def main(rounds: int) -> None:
    script, state = Script(), SearchState()
    backend = ThreadServer(Starlette(routes=[*scripted_upstream_app(script).routes,
                                             *search_app(state).routes])).start()
    page = backend.url + "/pages/big"
    state.docs.extend(Doc(f"{backend.url}/pages/doc{n}", f"Result {n}", f"benchmark snippet number {n}")
                      for n in range(5))
    state.pages["big"] = ("text/html", "<title>Big</title>" + "<p>lorem ipsum dolor sit amet</p>" * 900)
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(tmp, "--upstream-base-url", backend.url + "/v1", "--api-key", KEY_A,
                               "--allow-private-address", "127.0.0.1/32", "--web-search-provider", "searxng",
                               "--web-search-url", backend.url, "--access-log", "false").start()
        client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
        tools = [{"type": "web_search"}]
        search = {"tool_calls": [{"name": "web_search", "arguments": {"query": "benchmark"}}]}
        nothing = {"tool_calls": [{"name": "web_search", "arguments": {"query": "absent"}}]}
        opening = {"tool_calls": [{"name": "open_page", "arguments": {"url": page}}]}
        answer = {"content": f"See [result 0]({backend.url}/pages/doc0)."}
        kinds = {"plain": [answer], "two turns (empty search)": [nothing, answer],
                 "search + answer": [search, answer], "open_page + answer": [opening, answer]}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        try:
            for n in range(rounds + 3):
                for kind, turns in kinds.items():
                    script.add(*turns)
                    t = time.perf_counter()
                    client.responses.create(model="chat", input="q", tools=tools)
                    if n >= 3:  # warm-up rounds are not counted
                        times[kind].append(time.perf_counter() - t)
                    script.requests.clear()
                    state.requests.clear()
        finally:
            server.stop()
            backend.stop()
    for kind, values in times.items():
        print(f"{kind:28} {ms(values)}   ({rounds} rounds)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
