"""What `reasoning_input` costs an engine's prefix cache over an agent's tool-calling loop.

A reasoning model in a tool loop answers each step with reasoning and a call; the next request
carries the whole conversation. Engines (vLLM's automatic prefix caching, SGLang's radix
cache, llama.cpp's slots) reuse the longest token prefix the new prompt shares with what they
hold: the last prompt plus the tokens they generated, reasoning included. This renders each
step's prompt through Responsa's own conversion (chat.to_messages) with `reasoning_input`
`drop` and `reasoning_content`, under a chat template that, like those of Qwen3, gpt-oss and
DeepSeek's thinking models, shows reasoning for the assistant turns after the last user
message. It counts, per step, the prompt tokens and the tokens the engine must prefill (those
past the shared prefix), with the SmolLM2 tokenizer, and times that prefill with llama.cpp
(llama-cpp-python, SmolLM2-135M, CPU), which reuses its prefix exactly as described.

    python benchmarks/reasoning_input.py [--steps 12] [--time [--threads 1]]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jinja2
import llama_cpp

from responsa.backends.embedded import default_model_path
from responsa.chat import ChatOptions, to_messages

# ChatML, with `<think>` blocks for the assistant turns after the last user message.
TEMPLATE = """
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
<|im_start|>{{ m.role }}
{% if m.role == 'assistant' and loop.index0 > ns.last_user %}<think>
{{ m.reasoning_content or '' }}
</think>

{% endif %}{{ m.content or '' }}
{%- for c in m.tool_calls or [] %}<tool_call>
{"name": "{{ c.function.name }}", "arguments": {{ c.function.arguments }}}
</tool_call>{% endfor %}<|im_end|>
{% endfor -%}
<|im_start|>assistant
"""


def reasoning(step: int) -> str:
    return (f"Step {step}: the last command showed what I expected for part {step}, but the failing test "
            f"still points at module_{step}.py. I should look at how parse_{step} handles an empty list, "
            f"since the traceback ends there, and then run the tests for that module only to confirm.")


def tool_output(step: int) -> str:
    return "\n".join(f"module_{step}.py:{10 * i}: def parse_{step}_{i}(items): return [x for x in items if x]"
                     for i in range(4))


def conversation(steps: int) -> list[dict]:
    """The Responses items of a tool loop after `steps` steps."""
    items: list[dict] = [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "The test suite fails in the parser modules. Find out why and fix it."}]}]
    for k in range(steps):
        items += [
            {"type": "reasoning", "id": f"rs_{k}", "summary": [], "content": [
                {"type": "reasoning_text", "text": reasoning(k)}]},
            {"type": "function_call", "call_id": f"call_{k}", "name": "exec_command",
             "arguments": json.dumps({"cmd": f"grep -n parse_{k} module_{k}.py"})},
            {"type": "function_call_output", "call_id": f"call_{k}", "output": tool_output(k)},
        ]
    return items


def generated(step: int) -> str:
    """What the engine produced at a step (held in its cache after the prompt)."""
    call = json.dumps({"cmd": f"grep -n parse_{step} module_{step}.py"})
    return (f"<think>\n{reasoning(step)}\n</think>\n\n<tool_call>\n"
            f'{{"name": "exec_command", "arguments": {call}}}\n</tool_call><|im_end|>\n')


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def run(mode: str, steps: int, llm: llama_cpp.Llama, template: jinja2.Template,
        timed: bool) -> list[tuple[int, int, float]]:
    """Per step: prompt tokens, prefilled tokens, prefill seconds (0 unless timed)."""
    options = ChatOptions(reasoning_input=mode)
    if timed:
        llm.reset()
    cached: list[int] = []
    out = []
    for step in range(steps + 1):
        text = template.render(messages=to_messages(conversation(step), options=options))
        tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
        reuse = min(common_prefix(cached, tokens), len(tokens) - 1)  # the last prompt token is always run
        seconds = 0.0
        if timed:
            llm.n_tokens = reuse
            started = time.perf_counter()
            llm.eval(tokens[reuse:])
            seconds = time.perf_counter() - started
        out.append((len(tokens), len(tokens) - reuse, seconds))
        # The engine then generates this step's answer and holds prompt + answer. Tokenized as one
        # text: reasoning models have special tokens for <think> and <tool_call>, so the answer's
        # tokens join the prompt's cleanly (SmolLM2's tokenizer, which has none, would merge
        # across the boundary and blur the comparison).
        cached = llm.tokenize((text + generated(step)).encode(), add_bos=False, special=True)
        if timed:
            llm.n_tokens = min(common_prefix(cached, tokens), len(tokens))
            llm.eval(cached[llm.n_tokens:])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--time", action="store_true", help="also time each prefill with llama.cpp (slow)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    llm = llama_cpp.Llama(default_model_path(), n_ctx=8192, n_threads=args.threads, n_threads_batch=args.threads,
                          vocab_only=not args.time, verbose=False)
    template = jinja2.Environment(keep_trailing_newline=True).from_string(TEMPLATE)
    results = {mode: run(mode, args.steps, llm, template, args.time) for mode in ("drop", "reasoning_content")}
    print(f"{'step':>4} | {'drop: prompt':>12} {'prefill':>8} {'ms':>7} | "
          f"{'keep: prompt':>12} {'prefill':>8} {'ms':>7}")
    for step in range(args.steps + 1):
        d, k = results["drop"][step], results["reasoning_content"][step]
        print(f"{step:>4} | {d[0]:>12} {d[1]:>8} {d[2] * 1000:>7.1f} | {k[0]:>12} {k[1]:>8} {k[2] * 1000:>7.1f}")
    for mode, rows in results.items():
        later = rows[1:]
        print(f"{mode:>17}: prefilled {sum(r[1] for r in later)} tokens over steps 1-{args.steps} "
              f"(median {statistics.median(r[1] for r in later):.0f}/step"
              + (f", {sum(r[2] for r in later) * 1000:.0f} ms" if args.time else "")
              + f"), last prompt {rows[-1][0]} tokens")


if __name__ == "__main__":
    main()
