"""Conversation items in Responses form -> Chat Completions messages. Pure functions.

Every backend speaks Chat Completions messages (the embedded engine applies its chat
template to them), so this is the one place that decides how each item type reaches a
model. Item types that carry nothing a model can use (echoes of hosted tools this server
does not run, MCP listings) are left out.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True)
class ChatOptions:
    # How reasoning items go back to the engine: dropped, or as a field of the next
    # assistant message (`reasoning_content` for vLLM/SGLang/DeepSeek, `reasoning` for Ollama).
    reasoning_input: str = "drop"
    # Engines whose templates accept only one system message, first.
    merge_system: bool = False


@dataclass(frozen=True)
class Continued:
    """A history key for items whose first `base_n` are the items another key (`base`) named.
    Caches keyed by history keys build this key's entry from `base`'s when they have it, so a
    history that grows turn by turn (a conversation) is looked at only where it grew."""

    key: Hashable
    base: Hashable
    base_n: int


_FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]+")
_NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9_-]")


def mcp_function_name(server_label: str, tool_name: str) -> str:
    """The function name the model sees for an MCP server's tool.

    MCP tool names may be long or hold characters function names may not ('.', '/'); those
    are replaced and a hash of the full name added, so distinct tools keep distinct names."""
    name = f"mcp__{server_label}__{tool_name}"
    if len(name) <= 64 and _FUNCTION_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return _NOT_IN_NAMES.sub("_", name)[:55] + "_" + digest


def namespaced_function_name(namespace: str, name: str) -> str:
    """The function name the model sees for a tool inside a `namespace` tool: `<namespace>__<name>`.

    Both names are valid function names already; past 64 characters the name is shortened
    and a hash of both names added, so distinct tools keep distinct names."""
    flat = f"{namespace}__{name}"
    if len(flat) <= 64:
        return flat
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:8]
    return flat[:55] + "_" + digest


def call_function_name(item: dict) -> str:
    """The function name a `function_call` / `custom_tool_call` item reached the model under."""
    namespace = item.get("namespace")
    return namespaced_function_name(namespace, item["name"]) if namespace else item["name"]


def loaded_function_names(tools: Any) -> list[str]:
    """The function names the tools of a `tool_search_output` item are offered under."""
    names: list[str] = []
    for tool in tools if isinstance(tools, list) else ():
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            continue
        if tool.get("type") in ("function", "custom"):
            names.append(tool["name"])
        elif tool.get("type") == "namespace":
            names.extend(namespaced_function_name(tool["name"], t["name"]) for t in tool.get("tools") or ()
                         if isinstance(t, dict) and isinstance(t.get("name"), str))
    return names


# The functions the web_search tool offers the model (websearch.py), one per web_search_call action.
WEB_SEARCH_FUNCTIONS = {"search": "web_search", "open_page": "open_page", "find_in_page": "find_in_page"}


def web_search_function(action: dict) -> tuple[str, str]:
    """The function call a `web_search_call` item's action stands for: its name and JSON arguments."""
    kind = action.get("type")
    if kind == "open_page":
        return "open_page", json.dumps({"url": action.get("url") or ""})
    if kind == "find_in_page":
        return "find_in_page", json.dumps({"url": action.get("url") or "", "pattern": action.get("pattern") or ""})
    query, queries = action.get("query"), action.get("queries")
    if not query and isinstance(queries, list):
        query = "; ".join(q for q in queries if isinstance(q, str))
    return "web_search", json.dumps({"query": query or ""})


def web_search_summary(item: dict) -> str:
    """What a `web_search_call` tells a later turn, once what it found is no longer at hand."""
    action = item.get("action") or {}
    _, arguments = web_search_function(action)
    failed = item.get("status") == "failed"
    kind = action.get("type")
    if kind == "open_page":
        return f"Could not open {action.get('url')}." if failed else f"Opened {action.get('url')}."
    if kind == "find_in_page":
        return f"Looked for {json.dumps(action.get('pattern'))} in {action.get('url')}."
    query = json.loads(arguments)["query"]
    if failed:
        return f"The web search for {json.dumps(query)} failed."
    urls = [str(s["url"]) for s in action.get("sources") or () if isinstance(s, dict) and s.get("url")]
    return f"Searched the web for {json.dumps(query)}." + (f" Sources: {', '.join(urls)}" if urls else "")


def file_search_summary(item: dict) -> str:
    """What a `file_search_call` tells a later turn: its results when the response included them."""
    queries = json.dumps(item.get("queries") or [])
    if item.get("status") == "failed":
        return f"The search of the user's files for {queries} failed."
    if item.get("results") is None:
        return f"Searched the user's files for {queries} (what was found is not kept)."
    results = [r for r in item["results"] if isinstance(r, dict)]
    if not results:
        return f"Searched the user's files for {queries}: nothing was found."
    return f"Searched the user's files for {queries}. Results:\n\n" + "\n\n".join(
        f"{r.get('filename')} (file {r.get('file_id')}):\n{str(r.get('text') or '')[:FILE_RESULT_CHARS]}"
        for r in results)


FILE_RESULT_CHARS = 4000  # of each stored file_search result a later turn's model reads


def text_of(content: Any) -> str:
    """The text of a content list (or string), parts joined by newlines."""
    if isinstance(content, str):
        return content
    if content and len(content) == 1 and content[0].get("type") == "output_text":
        return content[0].get("text") or ""
    texts = []
    for part in content or ():
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            texts.append(part.get("text") or "")
        elif kind == "refusal":
            texts.append(part.get("refusal") or "")
    return "\n".join(texts)


def user_content(parts: list[dict]) -> str | list[dict]:
    """A user/system message's content: a plain string unless it carries images or files."""
    if len(parts) == 1 and parts[0].get("type") == "input_text":
        return parts[0]["text"]  # the common case, without the general path's overhead
    if all(p.get("type") == "input_text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    out: list[dict] = []
    for p in parts:
        kind = p.get("type")
        if kind == "input_text":
            out.append({"type": "text", "text": p["text"]})
        elif kind == "input_image":
            url = p.get("image_url")
            if url:
                image: dict[str, Any] = {"url": url}
                if p.get("detail") and p["detail"] != "auto":
                    image["detail"] = p["detail"]
                out.append({"type": "image_url", "image_url": image})
        elif kind == "input_file":
            file: dict[str, Any] = {}
            for key in ("file_data", "file_id", "filename"):
                if p.get(key):
                    file[key] = p[key]
            out.append({"type": "file", "file": file})
    return out


class _Renderer:
    """Turns items into messages one by one; its state can be saved and resumed (see
    `to_messages`' prefix cache)."""

    __slots__ = ("answered", "approvals", "hosted_outputs", "media", "options", "out", "pending_reasoning")

    def __init__(self, options: ChatOptions) -> None:
        self.options = options
        self.out: list[dict] = []
        self.pending_reasoning: list[str] = []
        # Images and files from tool outputs: tool messages carry text only, so they follow
        # as a user message once the run of tool messages ends (engines such as OpenAI's
        # refuse anything between an assistant's tool calls and the tool messages).
        self.media: list[dict] = []
        # MCP approvals pair requests with later items: indexed on the first request seen.
        self.approvals: dict[str, dict] | None = None
        self.answered: set[str | None] = set()
        # What hosted calls found (model-only `hosted_call_output` notes, see hosted_calls.py), by
        # item id, until their item is rendered.
        self.hosted_outputs: dict[str, str] = {}

    def flush_media(self) -> None:
        if self.media:
            self.out.append({"role": "user", "content": user_content(self.media)})
            self.media = []

    def assistant(self) -> dict:
        """The assistant message to add tool calls to: the last one, or a new one."""
        out = self.out
        if out and out[-1]["role"] == "assistant" and not self.pending_reasoning:
            return out[-1]
        self.flush_media()
        msg: dict[str, Any] = {"role": "assistant", "content": None}
        if self.pending_reasoning and self.options.reasoning_input != "drop":
            msg[self.options.reasoning_input] = "\n".join(self.pending_reasoning)
        self.pending_reasoning.clear()
        out.append(msg)
        return msg

    def tool_call(self, call_id: str, name: str, arguments: str) -> None:
        msg = self.assistant()
        msg.setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})

    def tool_result(self, call_id: str, content: Any) -> None:
        text = content if isinstance(content, str) else text_of(content)
        self.out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        if isinstance(content, list):
            self.media.extend(p for p in content if p.get("type") in ("input_image", "input_file"))

    def search_result(self, item: dict) -> None:
        """A tool search's result: which functions it loaded (they are offered from then on)."""
        names = loaded_function_names(item.get("tools"))
        call_id = self.search_call(item.get("call_id"))
        if call_id is None:  # its call is not right before it: give the model one
            call_id = item.get("call_id") or item["id"]
            self.tool_call(call_id, "tool_search", "{}")
        self.tool_result(call_id, f"Loaded tools: {', '.join(names)}." if names else "No tools found.")

    def search_call(self, call_id: str | None) -> str | None:
        """The id of the tool_search call, in the last turn of tool calls and still without a result,
        that an output answers: the one named `call_id`, or (the hosted API leaves `call_id` null
        for its own searches) the last one."""
        answered = set()
        for msg in reversed(self.out):
            if msg["role"] == "tool":
                answered.add(msg["tool_call_id"])
                continue
            for call in reversed(msg.get("tool_calls") or ()) if msg["role"] == "assistant" else ():
                if call["function"]["name"] == "tool_search" and call["id"] not in answered \
                        and call_id in (None, call["id"]):
                    return str(call["id"])
            return None
        return None

    def feed(self, items: Sequence[dict], all_items: Sequence[dict]) -> None:
        out = self.out
        assistant, tool_call, tool_result = self.assistant, self.tool_call, self.tool_result
        for item in items:
            kind = item.get("type")
            if kind == "message":
                self.flush_media()
                role = item.get("role")
                if role == "assistant":
                    text = text_of(item.get("content"))
                    if not self.pending_reasoning and (not out or out[-1]["role"] != "assistant"):
                        out.append({"role": "assistant", "content": text})  # the common case
                        continue
                    msg = assistant()
                    if msg.get("tool_calls") or msg.get("content"):
                        msg = {"role": "assistant", "content": text}
                        out.append(msg)
                    else:
                        msg["content"] = text
                else:
                    out.append({"role": "system" if role == "developer" else role,
                                "content": user_content(item.get("content") or [])})
            elif kind == "reasoning":
                text = text_of(item.get("content")) or text_of(item.get("summary"))
                if text:
                    self.pending_reasoning.append(text)
            elif kind == "function_call":
                tool_call(item["call_id"], call_function_name(item), item.get("arguments") or "{}")
            elif kind == "custom_tool_call":
                tool_call(item["call_id"], call_function_name(item), json.dumps({"input": item.get("input", "")}))
            elif kind == "tool_search_call":
                arguments = item.get("arguments")
                tool_call(item.get("call_id") or item["id"], "tool_search",
                          arguments if isinstance(arguments, str) else json.dumps(arguments or {}))
            elif kind == "tool_search_output":
                self.search_result(item)
            elif kind in ("function_call_output", "custom_tool_call_output"):
                tool_result(item["call_id"], item.get("output", ""))
            elif kind == "mcp_call":
                call_id = item.get("approval_request_id") or item["id"]
                tool_call(call_id, mcp_function_name(item["server_label"], item["name"]),
                          item.get("arguments") or "{}")
                result = item.get("output") if item.get("error") is None else f"Error: {item['error']}"
                tool_result(call_id, result or "")
            elif kind == "mcp_approval_request":
                if self.approvals is None:
                    self.approvals = {i["approval_request_id"]: i for i in all_items
                                      if i.get("type") == "mcp_approval_response"}
                    self.answered = {i.get("approval_request_id") for i in all_items if i.get("type") == "mcp_call"}
                if item["id"] in self.answered:
                    continue  # the mcp_call that ran after approval carries the call and its result
                response = self.approvals.get(item["id"])
                if response is None or response.get("approve"):
                    continue  # still waiting for the user, or approved and about to run
                tool_call(item["id"], mcp_function_name(item["server_label"], item["name"]),
                          item.get("arguments") or "{}")
                tool_result(item["id"], "The user denied this tool call" +
                            (f": {response['reason']}" if response.get("reason") else "."))
            elif kind == "image_generation_call":
                call_id = item["id"]
                tool_call(call_id, "image_generation", json.dumps({"prompt": item.get("revised_prompt") or ""}))
                error = item.get("error")
                detail = f": {error.get('message')}" if isinstance(error, dict) and error.get("message") else "."
                tool_result(call_id, "The image was generated and shown to the user." if item.get("result")
                            else f"Image generation {item.get('status', 'failed')}{detail}")
            elif kind == "hosted_call_output":
                self.hosted_outputs[item["id"]] = item["output"]
            elif kind == "web_search_call" and isinstance(item.get("action"), dict):
                name, arguments = web_search_function(item["action"])
                tool_call(item["id"], name, arguments)
                tool_result(item["id"], self.hosted_outputs.pop(item["id"], None) or web_search_summary(item))
            elif kind == "file_search_call" and isinstance(item.get("queries"), list):
                tool_call(item["id"], "file_search", json.dumps({"queries": item.get("queries") or []}))
                tool_result(item["id"], self.hosted_outputs.pop(item["id"], None) or file_search_summary(item))
            elif kind == "computer_call":
                # As the computer tool's function takes them (computer.py): one action, or a batch.
                args = {"action": item["action"]} if item.get("action") else {"actions": item.get("actions") or []}
                tool_call(item["call_id"], "computer", json.dumps(args))
            elif kind == "computer_call_output":
                screenshot = item.get("output") or {}
                parts = [{"type": "input_text", "text": "Screenshot after the action:"}]
                if screenshot.get("image_url"):
                    parts.append({"type": "input_image", "image_url": screenshot["image_url"], "detail": "auto"})
                tool_result(item["call_id"], parts)

    def snapshot(self, base: tuple | None, incremental: bool) -> _Saved:
        """The state so far, for the cache; this renderer goes on without changing it."""
        self.flush_media()
        saved = _Saved(list(self.out), list(self.pending_reasoning), base, incremental)
        self._own_last()
        return saved

    def restore(self, saved: _Saved) -> None:
        self.out = list(saved.out)
        self.pending_reasoning = list(saved.pending)
        self._own_last()

    def _own_last(self) -> None:
        if self.out and self.out[-1]["role"] == "assistant":
            # The next items may add tool calls to it: work on a copy, the cache keeps its own.
            last = dict(self.out[-1])
            if "tool_calls" in last:
                last["tool_calls"] = list(last["tool_calls"])
            self.out[-1] = last


class _Saved:
    """A renderer's state after a cached prefix, and the JSON of its settled messages (all but a
    last assistant message, which later tool calls may still extend), made when first asked for.

    An incremental entry (a `Continued` key's) keeps its JSON, in pieces: its base entry's (the
    cache key it was rendered on), which it takes over so that a conversation keeps only its
    newest state's, and its own. Others make it anew each time."""

    __slots__ = ("base", "encoded", "incremental", "out", "pending", "settled")

    def __init__(self, out: list[dict], pending: list[str], base: tuple | None, incremental: bool) -> None:
        self.out, self.pending = out, pending
        self.settled = len(out) - (1 if out and out[-1]["role"] == "assistant" else 0)
        self.base = base
        self.incremental = incremental
        self.encoded: list[bytes] | None = None

    def json(self) -> list[bytes]:
        """The settled messages as JSON array elements (no brackets), in pieces to be joined."""
        if self.encoded is not None:
            return self.encoded
        base = _PREFIXES.get(self.base) if self.base is not None else None
        self.base = None
        if base is not None and 0 < base.settled <= self.settled:
            encoded = base.json()
            base.encoded = None  # taken over
            tail = self.out[base.settled:self.settled]
            if tail:
                encoded.extend((b",", orjson.dumps(tail)[1:-1]))
        else:
            encoded = [orjson.dumps(self.out[:self.settled])[1:-1]]
        if self.incremental:
            self.encoded = encoded
        return encoded


# Rendered conversation prefixes: (prefix key, options) -> renderer state after the prefix.
_PREFIXES: collections.OrderedDict[tuple, _Saved] = collections.OrderedDict()
PREFIX_CACHE_SIZE = 1024
# Later items that change how earlier ones render (an MCP approval answers an earlier request).
_RETROACTIVE = frozenset({"mcp_approval_response", "mcp_call"})


def to_messages(items: Sequence[dict], instructions: str | None = None,
                options: ChatOptions = ChatOptions(), prefix: tuple[Any, int] | None = None) -> list[dict]:
    """Build the Chat Completions `messages` for a conversation.

    `prefix` = (key, n) says that `items[:n]` is a conversation that never changes under
    that key (an earlier response's whole chain): its rendering is then cached and reused,
    so a turn deep in a long chain renders only its new items. A `Continued` key's rendering
    is built from its base's, when cached."""
    out, _ = _render(items, options, prefix)
    if instructions:
        out.insert(0, _system(instructions))
    if options.merge_system:
        out = _merge_system(out)
    return out


def messages_json(items: Sequence[dict], instructions: str | None = None, options: ChatOptions = ChatOptions(),
                  prefix: tuple[Any, int] | None = None) -> list[bytes]:
    """`to_messages` as a JSON array, in pieces to be joined (once, into the request). The
    messages of a cached prefix are the JSON made for them once: a long conversation is not
    serialised again on every turn."""
    out, saved = _render(items, options, prefix)
    if saved is None or not saved.settled or options.merge_system:
        if instructions:
            out.insert(0, _system(instructions))
        return [orjson.dumps(_merge_system(out) if options.merge_system else out)]
    parts = [b"[", orjson.dumps(_system(instructions)), b","] if instructions else [b"["]
    parts.extend(saved.json())
    if len(out) > saved.settled:
        parts.extend((b",", orjson.dumps(out[saved.settled:])[1:-1]))
    parts.append(b"]")
    return parts


def _system(instructions: str) -> dict:
    return {"role": "system", "content": instructions}


def _render(items: Sequence[dict], options: ChatOptions,
            prefix: tuple[Any, int] | None) -> tuple[list[dict], _Saved | None]:
    """The messages, and the cached prefix state they start with (whose settled messages are
    the first ones, unchanged)."""
    renderer = _Renderer(options)
    start = 0
    saved = None
    if prefix is not None and not any(i.get("type") in _RETROACTIVE for i in items[prefix[1]:]):
        name, start = prefix
        continued = name if isinstance(name, Continued) else None
        key = (continued.key if continued is not None else name, options)
        saved = _PREFIXES.get(key)
        if saved is None:
            base_key = (continued.base, options) if continued is not None else None
            base = _PREFIXES.get(base_key) if base_key is not None else None
            base_n = continued.base_n if continued is not None else 0
            if base is not None and not any(i.get("type") in _RETROACTIVE for i in items[base_n:start]):
                renderer.restore(base)
                renderer.feed(items[base_n:start], items)
            else:
                base_key = None
                renderer.feed(items[:start], items)
            saved = _PREFIXES[key] = renderer.snapshot(base_key, incremental=continued is not None)
            if len(_PREFIXES) > PREFIX_CACHE_SIZE:
                _PREFIXES.popitem(last=False)
        else:
            _PREFIXES.move_to_end(key)
            renderer.restore(saved)
    renderer.feed(items[start:], items)
    renderer.flush_media()
    return renderer.out, saved


def _merge_system(messages: list[dict]) -> list[dict]:
    """Fold every system message into one at the start (for strict chat templates)."""
    system = [m["content"] for m in messages if m["role"] == "system" and isinstance(m["content"], str)]
    rest = [m for m in messages if not (m["role"] == "system" and isinstance(m["content"], str))]
    return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + rest
