"""`tool_search`: deferred tools found and loaded when the model asks for them.

A function or custom tool with `defer_loading` (top-level or inside a namespace) is not offered
to the model at first. With a `tool_search` tool the model gets a `tool_search` function:

- `execution: "server"` (the default): the call runs here. The deferred tools' names,
  descriptions and parameter schemas are searched for the words of the query; the response
  gets a `tool_search_call` and a `tool_search_output` item (the loaded definitions, a
  namespace's members inside their namespace), and the loop runs another turn with the found
  tools offered. The function's description lists what is searchable, as the hosted model
  sees the names and descriptions of deferred tools from the start.
- `execution: "client"`: the call ends the response as a `tool_search_call` item; the client
  searches and sends back a `tool_search_output` item with the definitions it loaded.

Either way every `tool_search_output` in the conversation loads its tools: the request's
deferred tools of those names are offered from then on, and definitions the request does not
have (a client's own search, as Codex does for its MCP servers) become client tools of the run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from . import checks as c
from .ids import new_id
from .namespaces import Member, member_tool
from .tools import CustomTool, FunctionTool, Outcome, Tool, ToolCall, ToolContext, ToolKind, ToolSet

NAME = "tool_search"  # the function the model calls
DEFAULT_LIMIT = 8  # tools loaded by one server-side search, unless the model asks for fewer or more
MAX_LIMIT = 32

SERVER_PARAMETERS = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "Words describing the tool you need."},
        "limit": {"type": "integer", "description": f"Load at most this many tools (default {DEFAULT_LIMIT})."},
    },
    "required": ["query"],
    "additionalProperties": False,
}
# What the hosted API's client-executed search takes when the request gives no `parameters`.
CLIENT_PARAMETERS = {
    "type": "object",
    "properties": {"paths": {"type": "array", "items": {"type": "string"},
                             "description": "Names of the namespaces or tools to load."}},
    "required": ["paths"],
    "additionalProperties": False,
}


class ToolSearchKind(ToolKind):
    """`{"type": "tool_search", "execution"?, "description"?, "parameters"?}` entries."""

    types = ("tool_search",)

    def check(self, entry: dict, param: str) -> dict:
        c.choice(entry, "execution", f"{param}.execution", ("server", "client"))
        c.string(entry, "description", f"{param}.description")
        c.mapping(entry, "parameters", f"{param}.parameters")
        return {"type": "tool_search", **{k: v for k, v in entry.items()
                                          if k in ("execution", "description", "parameters") and v is not None}}

    def build(self, entry: dict, ctx: ToolContext) -> Tool:
        return ToolSearchTool(entry)

    def from_history(self, history: Sequence[dict], toolset: ToolSet, ctx: ToolContext) -> None:
        if ctx.history_types is not None and "tool_search_output" not in ctx.history_types:
            return
        for item in history:
            if item.get("type") == "tool_search_output":
                load(item.get("tools"), toolset)


def load(definitions: Any, toolset: ToolSet) -> None:
    """Offer the tools of a `tool_search_output`: the run's own of those names, or new client tools."""
    new: list[Tool] = []
    names: set[str] = set()
    for definition in definitions if isinstance(definitions, list) else ():
        if not isinstance(definition, dict):
            continue
        kind = definition.get("type")
        if kind == "namespace":
            tools = [member_tool(member, definition) for member in definition.get("tools") or ()]
        elif kind == "function":
            tools = [FunctionTool(definition)]
        elif kind == "custom":
            tools = [CustomTool(definition)]
        else:
            continue  # an MCP server or a hosted tool: nothing this server loads
        for tool in tools:
            for fn in tool.functions():
                name = fn["function"]["name"]
                if toolset.owner(name) is None and name not in names:
                    new.append(tool)
                names.add(name)
    if new:
        toolset.add(new)
    toolset.loaded.update(names)


class ToolSearchTool(Tool):
    """The `tool_search` function: run here (`execution: "server"`) or handed to the client."""

    def __init__(self, entry: dict) -> None:
        self.entry = entry
        self.execution = entry.get("execution") or "server"
        self.client_side = self.execution == "client"
        self.toolset: ToolSet | None = None

    def functions(self) -> list[dict]:
        if self.client_side:
            description = self.entry.get("description") or (
                "Search for tools that are not loaded yet; the tools found can be called afterwards.")
            parameters = self.entry.get("parameters") or CLIENT_PARAMETERS
        else:
            description = self._server_description()
            parameters = SERVER_PARAMETERS
        return [{"type": "function", "function": {"name": NAME, "description": description,
                                                  "parameters": parameters}}]

    def _server_description(self) -> str:
        text = self.entry.get("description") or (
            "Search the tools that are not loaded yet, by the words of `query` (their names, descriptions "
            "and parameters are searched), and load the best matches: you can call them from the next step on.")
        searchable: dict[str, str] = {}
        for tool in self.toolset.tools if self.toolset is not None else ():
            if not tool.deferred:
                continue
            if isinstance(tool, Member):
                searchable.setdefault(f"{tool.namespace} (namespace)", tool.namespace_entry["description"])
            elif isinstance(tool, FunctionTool | CustomTool):
                searchable.setdefault(tool.name, tool.entry.get("description") or "")
        if searchable:
            text += "\nSearchable:\n" + "\n".join(f"- {name}: {about}" if about else f"- {name}"
                                                  for name, about in searchable.items())
        return text

    async def prepare(self, ctx: ToolContext) -> None:
        self.toolset = ctx.toolset

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        arguments = _arguments(call.arguments)
        events = ctx.events
        index = events.add_item({"id": new_id("tsc"), "type": "tool_search_call", "call_id": call.call_id,
                                 "execution": self.execution, "arguments": arguments, "status": "in_progress"})
        events.output[index]["status"] = "completed"
        events.done_item(index)
        if self.client_side:
            return Outcome.STOP
        toolset = ctx.toolset
        assert toolset is not None  # ToolSet.build sets it
        found = search(toolset, arguments)
        index = events.add_item({"id": new_id("tso"), "type": "tool_search_output", "call_id": call.call_id,
                                 "execution": "server", "tools": definitions(found), "status": "completed"})
        events.done_item(index)
        toolset.loaded.update(fn["function"]["name"] for tool in found for fn in tool.functions())
        return Outcome.CONTINUE


def _arguments(text: str) -> Any:
    """The call's arguments as the item carries them: the JSON value, or the text if it is not JSON."""
    try:
        return json.loads(text, parse_constant=_not_json) if text.strip() else {}
    except ValueError:
        return text


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")  # NaN and Infinity: Python reads them, JSON has none


def search(toolset: ToolSet, arguments: Any) -> list[Tool]:
    """The deferred tools a search finds, best first.

    Tools named in `paths` (a tool's own or offered name, or its namespace's) come first. Then
    each tool scores one point per word of `query` found in its names, descriptions and
    parameter schema, leaving out words found in every deferred tool (they tell none apart)."""
    args = arguments if isinstance(arguments, dict) else {"query": str(arguments)}
    query = args["query"] if isinstance(args.get("query"), str) else ""
    paths = {p for p in args.get("paths") or () if isinstance(p, str)} if isinstance(args.get("paths"), list) \
        else set()
    limit = args.get("limit")
    limit = min(max(limit, 1), MAX_LIMIT) if isinstance(limit, int) and not isinstance(limit, bool) \
        else DEFAULT_LIMIT
    candidates = [t for t in toolset.tools if t.deferred and t.functions()]
    named = [t for t in candidates if paths & {getattr(t, "name", None), t.entry.get("name"), t.namespace}]
    texts = {id(t): _searchable_text(t) for t in candidates}
    words = set(re.findall(r"[a-z0-9]+", query.lower()))
    if len(candidates) > 1:
        words = {w for w in words if not all(w in text for text in texts.values())}
    scored = sorted(((sum(w in texts[id(t)] for w in words), n, t) for n, t in enumerate(candidates)),
                    key=lambda s: (-s[0], s[1]))
    found = named + [t for score, _, t in scored if score > 0 and t not in named]
    return found[:max(limit, len(named))]


def _searchable_text(tool: Tool) -> str:
    entry = tool.entry
    parts = [str(getattr(tool, "name", "")), entry.get("name") or "", entry.get("description") or "",
             json.dumps(entry.get("parameters") or {})]
    if isinstance(tool, Member):
        parts += [tool.namespace or "", tool.namespace_entry["description"]]
    return " ".join(parts).lower()


def definitions(tools: Sequence[Tool]) -> list[dict]:
    """The `tools` of a `tool_search_output`: the found definitions, namespace members in their namespace."""
    out: list[dict] = []
    namespaces: dict[str, dict] = {}
    for tool in tools:
        if isinstance(tool, Member):
            group = namespaces.get(tool.namespace or "")
            if group is None:
                group = namespaces[tool.namespace or ""] = {**tool.namespace_entry, "tools": []}
                out.append(group)
            group["tools"].append(tool.entry)
        else:
            out.append(tool.entry)
    return out
