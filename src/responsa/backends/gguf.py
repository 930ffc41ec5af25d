"""What the embedded engine feeds a GGUF model: the chat prompt, the tool-call convention, grammars.

Pure functions and a template object; the engine in `embedded.py` runs them. Tools reach
the model in one of two ways: templates that know tools (`tools` appears in the template)
get them as the template's `tools` variable; other templates get a system-message block
that teaches the `<tool_call>{"name": ..., "arguments": ...}</tool_call>` convention, and
earlier calls and results are written in that same convention.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jinja2
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import json_schema_to_gbnf

from ..chat import ChatOptions, to_messages
from ..errors import InvalidRequest
from . import TurnRequest

log = logging.getLogger("responsa.embedded")

TOOL_OPEN = "<tool_call>"
CALL_HEAD = TOOL_OPEN + '\n{"name": "'  # the call's name follows, then '", "arguments": '

# For GGUF files without a template: ChatML, which most small instruct models understand.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
    " + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The Python port of llama.cpp's schema converter lets raw control characters into strings,
# which strict JSON parsers reject; this is the C++ converter's stricter rule.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


class ChatPrompt:
    """A GGUF model's chat template, rendering Responses items into one prompt string."""

    def __init__(self, template: str | None, bos_token: str = "", eos_token: str = "") -> None:
        self.template = template or FALLBACK_TEMPLATE
        self.native_tools = "tools" in self.template
        self._formatter = Jinja2ChatFormatter(template=self.template, bos_token=bos_token,
                                              eos_token=eos_token, add_generation_prompt=True)

    def render(self, items: Sequence[dict], instructions: str | None = None,
               tools: Sequence[dict] = ()) -> str:
        """The prompt, ending where the assistant's answer starts."""
        messages = chat_messages(items, instructions, tools, native_tools=self.native_tools)
        try:
            # llama_cpp types messages and tools as its TypedDicts; ours are plain dicts of those shapes.
            return self._formatter(messages=messages, tools=list(tools) if tools and self.native_tools  # type: ignore[arg-type]
                                   else None).prompt
        except (jinja2.TemplateError, ValueError, TypeError) as e:
            raise InvalidRequest(f"The model's chat template cannot render this conversation: {e}",
                                 param="input", code="invalid_value") from e


def chat_messages(items: Sequence[dict], instructions: str | None, tools: Sequence[dict],
                  *, native_tools: bool) -> list[dict]:
    """Chat messages a template can render: string contents, one system message first, tool
    calls and results in the model's convention, consecutive same-role messages merged."""
    out: list[dict] = []
    # Earlier reasoning goes to the template as `reasoning_content`: templates of reasoning
    # models render it (inside a tool-calling turn, say), the others never look at it.
    for m in to_messages(items, instructions, ChatOptions(reasoning_input="reasoning_content", merge_system=True)):
        content = _text(m.get("content"))
        msg: dict[str, Any] = {"role": m["role"], "content": content}
        if m.get("reasoning_content"):
            msg["reasoning_content"] = m["reasoning_content"]
        calls = m.get("tool_calls") or []
        if native_tools:
            if calls:
                msg["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
                    "name": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])}}
                    for c in calls]
            if m["role"] == "tool":
                msg["tool_call_id"] = m.get("tool_call_id")
        elif calls:
            written = "\n".join(call_text(c["function"]["name"], c["function"]["arguments"]) for c in calls)
            msg["content"] = f"{content}\n{written}" if content else written
        elif m["role"] == "tool":
            msg = {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
        prev = out[-1] if out else None
        if (prev is not None and prev["role"] == msg["role"] and msg["role"] in ("user", "assistant")
                and "tool_calls" not in prev and "tool_calls" not in msg):
            prev["content"] = f"{prev['content']}\n\n{msg['content']}" if prev["content"] else msg["content"]
        else:
            out.append(msg)
    if tools and not native_tools:
        block = tool_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{block}"
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise InvalidRequest("The embedded model reads text only; remove image and file parts from the "
                                 "input.", param="input", code="unsupported_input")
        texts.append(part.get("text") or "")
    return "\n".join(texts)


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def call_text(name: str, arguments: str) -> str:
    """One call written the way forced calls are generated (see `CALL_HEAD`)."""
    return f"{TOOL_OPEN}\n{json.dumps({'name': name, 'arguments': _arguments(arguments)})}\n</tool_call>"


def tool_prompt(tools: Sequence[dict]) -> str:
    """The system-message block that offers functions to a template without tool support."""
    defs = "\n".join(json.dumps({k: v for k, v in t["function"].items() if k in ("name", "description",
                                                                             "parameters")})
                     for t in tools)
    return ("You can call functions to answer. The functions, as JSON:\n<tools>\n" + defs + "\n</tools>\n"
            "To call one, answer with only:\n" + TOOL_OPEN +
            '\n{"name": "<function name>", "arguments": <the arguments as a JSON object>}\n</tool_call>')


# ---- what to generate -------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """How one turn is generated.

    `text`: free text. `json`: text under a JSON-schema grammar. `call`: a function call
    forced under grammars (name among `names`, then its arguments). `auto`: free text,
    turned into a grammar-constrained call if the answer opens with `<tool_call>` or `{`.
    """

    mode: str
    tools: tuple[dict, ...] = ()  # offered in the prompt
    names: tuple[str, ...] = ()
    schemas: dict[str, dict] = field(default_factory=dict)  # function name -> parameters schema
    text_schema: dict | None = None


def plan(req: TurnRequest) -> Plan:
    """The generation mode for a turn request."""
    text_schema = _format_schema(req.options.response_format)
    choice = req.tool_choice
    if req.tools and choice != "none":
        tools = tuple(req.tools)
        empty = {"type": "object", "properties": {}}
        schemas = {t["function"]["name"]: t["function"].get("parameters") or empty for t in tools}
        if isinstance(choice, dict):
            name = choice.get("function", {}).get("name")
            if name in schemas:
                return Plan("call", tools, (name,), schemas)
        elif choice == "required":
            return Plan("call", tools, tuple(schemas), schemas)
        elif text_schema is None:
            return Plan("auto", tools, tuple(schemas), schemas)
    if text_schema is not None:
        return Plan("json", text_schema=text_schema)
    return Plan("text")


def _format_schema(fmt: dict | None) -> dict | None:
    if not fmt:
        return None
    if fmt.get("type") == "json_schema":
        return (fmt.get("json_schema") or {}).get("schema") or {"type": "object"}
    if fmt.get("type") == "json_object":
        return {"type": "object"}
    return None


# ---- grammars ---------------------------------------------------------------------------

def json_grammar(schema: dict) -> str:
    """GBNF for JSON matching `schema` (any JSON object if the converter cannot handle it)."""
    return _json_grammar(json.dumps(schema))  # key order kept: it is the order properties are written in


@functools.lru_cache(maxsize=256)
def _json_grammar(schema_json: str) -> str:
    try:
        gbnf = json_schema_to_gbnf(schema_json)
    except Exception as e:  # the converter asserts on schemas it does not know
        log.warning("cannot build a grammar for this JSON schema (%s); constraining to any JSON object", e)
        gbnf = json_schema_to_gbnf('{"type": "object"}')
    return gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR)


def name_grammar(names: Sequence[str]) -> str:
    """GBNF for one of `names` followed by the closing quote of the call's `name` string."""
    alternatives = " | ".join(json.dumps(n) for n in names)
    return f'root ::= ({alternatives}) "\\""'
