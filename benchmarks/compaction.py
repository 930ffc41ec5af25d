"""Tokens sent to the engine per turn over a long previous_response_id chain, with and without
`context_management` compaction, and the latency a compaction turn adds.

Starts a scripted Chat Completions engine in this process (every answer about 120 words; the
summary asked for by compaction about 80 words), starts `responsa serve` in front of it, and
runs a --turns turn chain twice: plainly, and with
`context_management=[{"type": "compaction", "compact_threshold": N}]`. Each engine request is
counted in tokens with the SmolLM2 tokenizer, its messages written as ChatML. The engine
answers at once, so the latencies are the gateway's own: a real engine adds the time it takes
to write the summary (at most 2,048 tokens) to each compaction turn.

    python benchmarks/compaction.py [--turns 50] [--threshold 3000]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import llama_cpp
import uvicorn
from openai import OpenAI

from responsa.backends.embedded import default_model_path
from responsa.backends.scripted import Script, scripted_upstream_app
from responsa.backends.tokenize import chatml
from responsa.compaction import PROMPT

ANSWER = ("Here is a detailed answer to step {n}: " + "the plan goes on with careful work on the next part, "
          "checking each result before moving ahead, " * 8).strip()
SUMMARY = ("Summary so far: the user is working through a long task one step at a time; each step was "
           "answered with a plan and checked. " * 4).strip()


class BenchScript(Script):
    """Answers every turn at length, and a compaction request with a summary."""

    def next_turn(self, body: dict) -> dict:
        with self.lock:
            self.requests.append(body)
        last = body["messages"][-1]
        if last.get("role") == "user" and last.get("content") == PROMPT:
            return {"content": SUMMARY}
        return {"content": ANSWER.format(n=len(self.requests))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chain(client: OpenAI, turns: int, manage: list[dict] | None) -> list[tuple[float, bool]]:
    """Run the chain; per turn its latency and whether it compacted."""
    previous = None
    out = []
    for n in range(turns):
        started = time.perf_counter()
        kwargs = {"context_management": manage} if manage else {}
        r = client.responses.create(model="m", input=f"Step {n}: go on with the next part, please.",
                                    previous_response_id=previous, **kwargs)  # type: ignore[arg-type]
        out.append((time.perf_counter() - started, any(i.type == "compaction" for i in r.output)))
        previous = r.id
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--threshold", type=int, default=3000)
    args = parser.parse_args()
    tokenizer = llama_cpp.Llama(default_model_path(), vocab_only=True, verbose=False)

    def tokens(body: dict) -> int:
        return len(tokenizer.tokenize(chatml(body["messages"]).encode(), add_bos=False, special=True))

    script = BenchScript()
    engine_port = free_port()
    engine = uvicorn.Server(uvicorn.Config(scripted_upstream_app(script), host="127.0.0.1", port=engine_port,
                                           log_level="warning", lifespan="off"))
    threading.Thread(target=engine.run, daemon=True).start()
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen([sys.executable, "-m", "responsa", "serve", "--port", str(port), "--data-dir",
                                 data, "--upstream-base-url", f"http://127.0.0.1:{engine_port}/v1",
                                 "--access-log", "false", "--log-level", "warning"])
        try:
            deadline = time.time() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.time() > deadline:
                    raise RuntimeError("the server did not start")
                time.sleep(0.1)
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0)
            results = {}
            for label, manage in (("plain", None),
                                  ("compaction", [{"type": "compaction", "compact_threshold": args.threshold}])):
                script.reset()
                turns = chain(client, args.turns, manage)
                sent = [tokens(b) for b in script.requests]
                results[label] = (turns, sent)
        finally:
            proc.terminate()
            proc.wait(timeout=15)
            engine.should_exit = True

    plain_turns, plain_sent = results["plain"]
    managed_turns, managed_sent = results["compaction"]
    # Per turn, what the engine read for the answer (a compaction turn also sent its summary request).
    answers = managed_sent
    per_turn: list[int] = []
    summaries: list[int] = []
    i = 0
    for _latency, compacted in managed_turns:
        if compacted:
            summaries.append(answers[i])
            i += 1
        per_turn.append(answers[i])
        i += 1
    print(f"{'turn':>4} {'plain':>7} {'managed':>8}")
    for n in range(0, args.turns, 5):
        mark = " (compacted)" if managed_turns[n][1] else ""
        print(f"{n + 1:>4} {plain_sent[n]:>7} {per_turn[n]:>8}{mark}")
    print(f"last turn: {plain_sent[-1]} tokens plain, {per_turn[-1]} with compaction (threshold {args.threshold})")
    print(f"all turns: {sum(plain_sent)} tokens plain, {sum(managed_sent)} with compaction "
          f"({len(summaries)} compactions, their summary requests {sum(summaries)} tokens included)")
    normal = [t for t, c in managed_turns if not c]
    compacting = [t for t, c in managed_turns if c]
    print(f"turn latency p50: plain {statistics.median(t for t, _ in plain_turns) * 1000:.1f} ms, "
          f"managed {statistics.median(normal) * 1000:.1f} ms, compaction turns "
          f"{statistics.median(compacting) * 1000 if compacting else float('nan'):.1f} ms")


if __name__ == "__main__":
    main()
