"""Tools: what the request offers, what the model sees as functions, and how calls are run.

Every `tools[]` entry has a kind, looked up by its `type`. A kind checks the entry and
builds a `Tool` for one run. The model sees each tool as one or more Chat Completions
function definitions; when it calls one, the loop hands the call to the tool that owns the
function name. Client-side tools (functions, custom tools, computer use) end the response
with a call item for the client to run; server-side tools (MCP, image generation) run here
and the loop continues with their output.

A function or custom tool with `defer_loading` is offered only once a tool search loaded it
(toolsearch.py); `namespace` tools (namespaces.py) offer their members under flattened names.

Tool types the server cannot run (code interpreter, web search without a configured provider,
...) are accepted and echoed so that clients like Codex keep working, but are not offered to
the model; `ignored_tool_types` names them for a warning header.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import checks as c
from .errors import InvalidRequest

if TYPE_CHECKING:
    from .config import Settings
    from .events import ResponseEvents
    from .fetcher import Fetcher
    from .netguard import Guard

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# The most entries `tools` (and `tool_choice.tools`) may hold: the hosted API's bound.
MAX_TOOLS = 128

# The web search tool's types (websearch.py runs them when a provider is configured).
WEB_SEARCH_TYPES = ("web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11")
# Tool types accepted and echoed but not offered to the model while no kind runs them (docs/unsupported.md).
IGNORED_TYPES = frozenset({
    *WEB_SEARCH_TYPES, "code_interpreter", "local_shell", "shell", "apply_patch", "programmatic_tool_calling",
})
CALLERS = ("direct", "programmatic")


class Outcome(enum.Enum):
    CONTINUE = "continue"  # the call ran here; give the model its output and run another turn
    STOP = "stop"  # the client must act (run a function, approve a call): end the response


@dataclass(frozen=True)
class ToolCall:
    """A call the model made, in Chat Completions terms."""

    call_id: str
    name: str
    arguments: str


@dataclass
class ToolContext:
    """What a tool may use during a run. The loop never sees where these come from."""

    events: ResponseEvents
    history: Sequence[dict]  # every item of the conversation so far (chain, input, output)
    settings: Settings
    request_headers: dict[str, str] = field(default_factory=dict)
    input_start: int = 0  # history[input_start:] is this request's own input
    # Loads an uploaded file's (bytes, mime type) by id for this owner, or raises NotFound.
    load_file: Callable[[str], Awaitable[tuple[bytes, str]]] | None = None
    # Whether the routed engine takes image input (computer use sends it screenshots).
    accepts_images: bool = True
    # Items only the model sees, each placed before the output item at its index: what a tool
    # told the model about a call it refused (an invalid computer action). Never output or stored.
    model_notes: list[tuple[int, dict]] = field(default_factory=list)
    # Server-side downloads of URLs from the request (image inputs), behind the private-network
    # guard; None where nothing is downloaded.
    fetcher: Fetcher | None = None
    # The run's tools (a tool search looks through the others); set by `ToolSet.build`.
    toolset: ToolSet | None = None
    # The item types `history` holds, when known without looking at every item (a conversation's
    # are kept as it grows): what scans for a rare type may skip. None: not known.
    history_types: frozenset[str] | set[str] | None = None
    owner: str = ""  # who the run is for (a hosted tool reads only what this owner owns)
    include: tuple[str, ...] = ()  # the request's `include`

    @property
    def guard(self) -> Guard:
        """Which addresses server-side connections (MCP servers, downloads) may reach."""
        if self.fetcher is not None:
            return self.fetcher.guard
        from .netguard import Guard  # not loaded by whatever parses a request

        return Guard.from_settings(self.settings)


class Tool(Protocol):
    """One request tool entry, ready for a run. Tools subclass it for the defaults below."""

    entry: dict  # the checked `tools[]` entry
    # The client runs the calls (a function, a computer action): they end the response and are
    # not among the calls `max_tool_calls` limits, which are those run here.
    client_side: bool = False
    # The call's item is opened as soon as the model names the function, and its arguments
    # streamed as they come (otherwise the tool writes its items when the call is complete).
    streams_arguments: bool = False
    # The JSON Schema a call's arguments must match before the client is handed the call (a
    # `strict: true` function's parameters; see arguments.py), or None.
    strict_schema: dict | None = None
    # `defer_loading`: its functions are offered only once a tool search loaded them.
    deferred: bool = False
    # The `namespace` tool it belongs to, if any (its functions carry flattened names).
    namespace: str | None = None

    def call_name(self, function: str) -> tuple[str, str | None]:
        """The `name` and `namespace` of the output item for a call of `function`."""
        return function, None

    def functions(self) -> list[dict]:
        """Chat Completions `tools[]` entries offered to the model."""
        ...

    async def validate(self, ctx: ToolContext) -> None:
        """Checks that need I/O, before the response exists: an APIError here is the request's."""
        return None

    async def prepare(self, ctx: ToolContext) -> None:
        """Work before the first turn (for example listing an MCP server's tools)."""
        return None

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        """Run or hand out one call, emitting its output items."""
        ...


class ToolKind(Protocol):
    """A `tools[]` entry type: checks entries and builds their Tools. Kinds subclass it for the
    defaults below."""

    types: tuple[str, ...]

    def check(self, entry: dict, param: str) -> dict:
        """The entry checked and normalised, as echoed (secrets already removed by `public`)."""
        ...

    def public(self, entry: dict) -> dict:
        """The entry as stored and returned: without secrets."""
        return entry

    def build(self, entry: dict, ctx: ToolContext) -> Tool | list[Tool]:
        """The entry's Tool for one run (a namespace's entry holds several)."""
        ...

    def names(self, entry: dict) -> list[str]:
        """The function names a checked entry offers the model, where the request decides them."""
        return []

    def from_history(self, history: Sequence[dict], toolset: ToolSet, ctx: ToolContext) -> None:
        """Add to a new toolset what this kind's items in the conversation give it (loaded tools)."""
        return None

    def check_history(self, history: Sequence[dict], tools: Sequence[Tool], new_from: int) -> None:
        """Refuse (400) a conversation this kind's items make invalid; `history[new_from:]` is new."""
        return None


# ---- function tools ------------------------------------------------------------------

class FunctionTool(Tool):
    """A client function: the call becomes a `function_call` item for the client to run."""

    streams_arguments = True
    client_side = True

    def __init__(self, entry: dict) -> None:
        self.entry = entry
        self.name = entry["name"]
        self.deferred = bool(entry.get("defer_loading"))
        if entry.get("strict"):
            self.strict_schema = entry.get("parameters") or {"type": "object", "properties": {}}

    def functions(self) -> list[dict]:
        if not direct(self.entry):
            return []
        fn: dict[str, Any] = {"name": self.name,
                              "parameters": self.entry.get("parameters") or {"type": "object", "properties": {}}}
        if self.entry.get("description"):
            fn["description"] = self.entry["description"]
        if self.entry.get("strict"):
            fn["strict"] = True
        return [{"type": "function", "function": fn}]

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        name, namespace = self.call_name(call.name)
        ctx.events.function_call(call.call_id, name, call.arguments, namespace)
        return Outcome.STOP


def direct(entry: dict) -> bool:
    """Whether the model may call the tool itself (`allowed_callers`; this server runs no programs)."""
    callers = entry.get("allowed_callers")
    return callers is None or "direct" in callers


def check_client_tool(entry: dict, param: str, out: dict) -> None:
    """The fields function and custom tools share: checked, and kept in `out` when given."""
    for key in ("defer_loading", "async"):
        value = c.boolean(entry, key, f"{param}.{key}")
        if value is not None:
            out[key] = value
    callers = c.string_list(entry, "allowed_callers", f"{param}.allowed_callers")
    if callers is not None:
        for i, caller in enumerate(callers):
            if caller not in CALLERS:
                raise c.bad_value(f"{param}.allowed_callers[{i}]", caller, CALLERS)
        out["allowed_callers"] = callers


class FunctionKind(ToolKind):
    types: tuple[str, ...] = ("function",)

    def check(self, entry: dict, param: str) -> dict:
        name = c.string(entry, "name", f"{param}.name", required=True)
        if not FUNCTION_NAME.match(name or ""):
            raise InvalidRequest(
                f"Invalid '{param}.name': string does not match pattern. Expected a string that matches the "
                "pattern '^[a-zA-Z0-9_-]+$' of at most 64 characters.", param=f"{param}.name",
                code="invalid_value")
        parameters = entry.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise c.wrong_type(f"{param}.parameters", "an object", parameters)
        out: dict[str, Any] = {
            "type": "function", "name": name,
            "description": c.string(entry, "description", f"{param}.description"),
            "parameters": parameters,
            "strict": c.boolean(entry, "strict", f"{param}.strict"),
        }
        check_client_tool(entry, param, out)
        output_schema = c.mapping(entry, "output_schema", f"{param}.output_schema")
        if output_schema is not None:
            out["output_schema"] = output_schema
        return out

    def names(self, entry: dict) -> list[str]:
        return [entry["name"]]

    def build(self, entry: dict, ctx: ToolContext) -> Tool:
        return FunctionTool(entry)


class CustomTool(Tool):
    """A free-form client tool: offered as a function taking one `input` string."""

    client_side = True

    def __init__(self, entry: dict) -> None:
        self.entry = entry
        self.name = entry["name"]
        self.deferred = bool(entry.get("defer_loading"))

    def functions(self) -> list[dict]:
        if not direct(self.entry):
            return []
        fmt = self.entry.get("format") or {"type": "text"}
        description = self.entry.get("description") or ""
        if fmt.get("type") == "grammar":
            description += (f"\nThe input must match this {fmt.get('syntax')} grammar:\n{fmt.get('definition')}")
        return [{"type": "function", "function": {
            "name": self.name,
            "description": description.strip() or f"Call {self.name} with free-form text input.",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}},
                           "required": ["input"], "additionalProperties": False},
        }}]

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        name, namespace = self.call_name(call.name)
        ctx.events.custom_tool_call(call.call_id, name, custom_input(call.arguments), namespace)
        return Outcome.STOP


def custom_input(arguments: str) -> str:
    """The `input` string of a custom tool call made as a function call."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return arguments
    if isinstance(parsed, dict) and isinstance(parsed.get("input"), str):
        return parsed["input"]
    return arguments


class CustomKind(ToolKind):
    types: tuple[str, ...] = ("custom",)

    def check(self, entry: dict, param: str) -> dict:
        name = c.string(entry, "name", f"{param}.name", required=True)
        if not FUNCTION_NAME.match(name or ""):
            raise InvalidRequest(f"Invalid '{param}.name': use 1-64 characters a-z, A-Z, 0-9, _ or -.",
                                 param=f"{param}.name", code="invalid_value")
        fmt = c.mapping(entry, "format", f"{param}.format")
        if fmt is not None:
            kind = c.choice(fmt, "type", f"{param}.format.type", ("text", "grammar"), required=True)
            if kind == "grammar":
                c.choice(fmt, "syntax", f"{param}.format.syntax", ("lark", "regex"), required=True)
                c.string(fmt, "definition", f"{param}.format.definition", required=True)
        out = {k: v for k, v in entry.items() if v is not None}
        out["type"] = "custom"
        check_client_tool(entry, param, out)
        return out

    def names(self, entry: dict) -> list[str]:
        return [entry["name"]]

    def build(self, entry: dict, ctx: ToolContext) -> Tool:
        return CustomTool(entry)


# ---- the registry ----------------------------------------------------------------------

# Every tool kind by `type`. Function and custom tools are always here; the kinds that run on
# the server (MCP, image generation, computer use, and namespace and tool_search with theirs)
# live beside the code they need and are registered by the composition root (app.py), so that
# parsing a request loads none of them.
_KINDS: dict[str, ToolKind] = {}


def register_tool_kinds(*kinds: ToolKind) -> None:
    """Accept `tools[]` entries of these kinds (each under its `types`)."""
    for kind in kinds:
        for tool_type in kind.types:
            _KINDS[tool_type] = kind


def unregister_tool_kinds(*types: str) -> None:
    """Forget the kinds of these types (one in IGNORED_TYPES is then accepted and ignored again)."""
    for tool_type in types:
        _KINDS.pop(tool_type, None)


register_tool_kinds(FunctionKind(), CustomKind())


def check_tool(entry: Any, param: str) -> dict:
    """One `tools[]` entry checked by its kind; a type no kind knows is a 400 (echoed ones are kept)."""
    if not isinstance(entry, dict):
        raise c.wrong_type(param, "an object", entry)
    kind = c.string(entry, "type", f"{param}.type", required=True)
    assert kind is not None
    if kind in _KINDS:
        return _KINDS[kind].check(entry, param)
    if kind in IGNORED_TYPES:
        return dict(entry)
    raise c.bad_value(f"{param}.type", kind, sorted([*_KINDS, *IGNORED_TYPES]))


def check_tools(entries: list[Any]) -> list[dict]:
    c.max_items(entries, "tools", MAX_TOOLS)
    out = []
    names: set[str] = set()
    plain: set[str] = set()  # names the request gives functions itself (not flattened ones)
    labels: set[str] = set()
    deferred: str | None = None
    for i, entry in enumerate(entries):
        param = f"tools[{i}]"
        checked = check_tool(entry, param)
        kind = checked["type"]
        for name in _KINDS[kind].names(checked) if kind in _KINDS else ():
            if name in names:
                if kind == "namespace":
                    raise InvalidRequest(f"Invalid 'tools': duplicate function name '{name}' (a namespace's "
                                         "tools are offered to the model as <namespace>__<name>).", param=param,
                                         code="invalid_value")
                raise InvalidRequest(f"Invalid 'tools': duplicate function name '{name}'.",
                                     param=f"{param}.name", code="invalid_value")
            names.add(name)
            if kind in ("function", "custom"):
                plain.add(name)
        label = checked.get("server_label") if kind == "mcp" else None
        if label:
            if label in labels:
                raise InvalidRequest(f"Invalid 'tools': duplicate MCP server_label '{label}'.",
                                     param=f"{param}.server_label", code="invalid_value")
            labels.add(label)
        members = checked["tools"] if kind == "namespace" else []
        if deferred is None and any(t.get("defer_loading") is True for t in [checked, *members]):
            deferred = param
        out.append(checked)
    reserved = sorted(n for n in plain if n.startswith("mcp__")) if labels else []
    if reserved:  # MCP tools reach the model as functions named mcp__<label>__<tool>
        raise InvalidRequest(f"Invalid 'tools': function names starting with 'mcp__' ('{reserved[0]}') are "
                             "reserved for MCP tools.", param="tools", code="invalid_value")
    if deferred is not None and not any(t["type"] == "tool_search" for t in out):
        raise InvalidRequest(f"Invalid '{deferred}': a tool with 'defer_loading' is only offered once a tool "
                             "search finds it; add a {\"type\": \"tool_search\"} tool.", param=deferred,
                             code="invalid_value")
    return out


def public_tools(entries: list[dict]) -> list[dict]:
    """The tool entries as stored and echoed, with secrets (MCP headers) removed."""
    kinds = _KINDS
    return [kinds[e["type"]].public(e) if e["type"] in kinds else e for e in entries]


def ignored_tool_types(entries: list[dict]) -> list[str]:
    return sorted({e["type"] for e in entries if e["type"] in IGNORED_TYPES and e["type"] not in _KINDS})


# tool_choice names the computer (or web search) tool by any of its types, whatever the entry's.
COMPUTER_TYPES = frozenset({"computer", "computer_use_preview", "computer_use"})


def same_tool_type(chosen: Any, tool_type: Any) -> bool:
    """Whether a tool_choice / allowed_tools `type` designates a tool entry of `tool_type`."""
    return chosen == tool_type or any(chosen in family and tool_type in family
                                      for family in (COMPUTER_TYPES, WEB_SEARCH_TYPES))


def check_tool_choice(value: Any, tools: list[dict]) -> str | dict:
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise c.bad_value("tool_choice", value, ("none", "auto", "required"))
        return value
    if not isinstance(value, dict):
        raise c.wrong_type("tool_choice", "a string or an object", value)
    kind = c.string(value, "type", "tool_choice.type", required=True)
    if kind in ("function", "custom"):
        name = c.string(value, "name", "tool_choice.name", required=True)
        # A tool inside a namespace is chosen by its own name, the namespace optionally named too.
        namespace = c.string(value, "namespace", "tool_choice.namespace")
        candidates = [(None, t) for t in tools] + [(t["name"], member) for t in tools if t["type"] == "namespace"
                                                   for member in t["tools"]]
        if not any(t["type"] == kind and t.get("name") == name and namespace in (None, ns)
                   for ns, t in candidates):
            raise InvalidRequest(f"Tool choice '{name}' not found in 'tools' parameter.", param="tool_choice",
                                 code="invalid_value")
        return {"type": kind, "name": name, **({"namespace": namespace} if namespace else {})}
    if kind == "allowed_tools":
        mode = c.choice(value, "mode", "tool_choice.mode", ("auto", "required"), required=True)
        allowed = c.max_items(c.array(value, "tools", "tool_choice.tools", required=True) or [],
                              "tool_choice.tools", MAX_TOOLS)
        for i, ref in enumerate(allowed):
            if not isinstance(ref, dict) or not isinstance(ref.get("type"), str):
                raise c.wrong_type(f"tool_choice.tools[{i}]", "an object with a 'type'", ref)
        return {"type": "allowed_tools", "mode": mode, "tools": allowed}
    if kind == "mcp":
        label = c.string(value, "server_label", "tool_choice.server_label", required=True)
        if not any(t["type"] == "mcp" and t.get("server_label") == label for t in tools):
            raise InvalidRequest(f"Tool choice MCP server '{label}' not found in 'tools' parameter.",
                                 param="tool_choice", code="invalid_value")
        out = {"type": "mcp", "server_label": label}
        name = c.string(value, "name", "tool_choice.name")
        if name:
            out["name"] = name
        return out
    if not any(same_tool_type(kind, t["type"]) for t in tools):
        raise InvalidRequest(f"Tool choice '{kind}' not found in 'tools' parameter.", param="tool_choice",
                             code="invalid_value")
    if kind in IGNORED_TYPES and kind not in _KINDS:
        raise InvalidRequest(f"Tool choice '{kind}' forces a tool this server does not run.",
                             param="tool_choice", code="unsupported_value")
    return {"type": kind}


# ---- one run's tools -------------------------------------------------------------------

class ToolSet:
    """The tools of one run: the functions offered to the model and who runs each call."""

    def __init__(self, tools: list[Tool]) -> None:
        self.tools = tools
        # Functions of deferred tools that are offered: a tool search loaded them, or tool_choice
        # forces them.
        self.loaded: set[str] = set()
        self._owner: dict[str, Tool] = {}
        self._index()

    def add(self, tools: list[Tool]) -> None:
        self.tools.extend(tools)
        self._index()

    def _index(self) -> None:
        """Which tool owns each function name, offered yet or not; two tools offering one name is a 400."""
        self._owner = {}
        for tool in self.tools:
            for fn in tool.functions():
                name = fn["function"]["name"]
                if name in self._owner:
                    raise InvalidRequest(f"Two tools offer a function named '{name}'.", param="tools",
                                         code="invalid_value")
                self._owner[name] = tool

    @classmethod
    def build(cls, entries: list[dict], ctx: ToolContext) -> ToolSet:
        kinds = _KINDS
        tools: list[Tool] = []
        for entry in entries:
            if entry["type"] in kinds:
                built = kinds[entry["type"]].build(entry, ctx)
                tools.extend(built if isinstance(built, list) else [built])
        toolset = ctx.toolset = cls(tools)
        for kind in dict.fromkeys(kinds.values()):
            kind.from_history(ctx.history, toolset, ctx)
        return toolset

    def functions(self, allowed: set[str] | None = None) -> list[dict]:
        out = []
        for tool in self.tools:
            for fn in tool.functions():
                name = fn["function"]["name"]
                if (allowed is None or name in allowed) and (not tool.deferred or name in self.loaded):
                    out.append(fn)
        return out

    def owner(self, name: str) -> Tool | None:
        return self._owner.get(name)

    async def validate(self, ctx: ToolContext) -> None:
        """Checks that need I/O (an MCP server's address), run before the response exists (4xx)."""
        for tool in self.tools:
            await tool.validate(ctx)
        # Every kind checks the conversation against the tools, present or not (MCP: approvals
        # must answer known requests a tool here can run).
        for kind in dict.fromkeys(_KINDS.values()):
            kind.check_history(ctx.history, self.tools, ctx.input_start)

    async def prepare(self, ctx: ToolContext) -> None:
        for tool in self.tools:
            await tool.prepare(ctx)
        self._index()  # preparing may change what a tool offers (an MCP server's listing)


def chat_tool_choice(choice: str | dict, toolset: ToolSet) -> tuple[str | dict, set[str] | None]:
    """Map the request's `tool_choice` to Chat Completions' and the function names to offer."""
    if isinstance(choice, str):
        return choice, None
    kind = choice["type"]
    if kind == "allowed_tools":
        names: set[str] = set()
        for ref in choice["tools"]:
            names.update(_functions_for(ref, toolset))
        return choice["mode"], names
    names_for = _functions_for(choice, toolset)
    toolset.loaded.update(names_for)  # forcing a deferred tool offers it
    if len(names_for) == 1:
        return {"type": "function", "function": {"name": next(iter(names_for))}}, None
    if names_for:
        return "required", set(names_for)
    raise InvalidRequest(f"Tool choice '{kind}' matches no tool the model can call.", param="tool_choice",
                         code="invalid_value")


def _functions_for(ref: dict, toolset: ToolSet) -> set[str]:
    """The function names that a tool reference (`{type, name?, server_label?, namespace?}`, or
    `{type: "namespace", name}` for all of a namespace's tools) stands for."""
    kind = ref.get("type")
    matched: list[Tool] = []
    for tool in toolset.tools:
        entry = tool.entry
        if kind == "namespace":
            if tool.namespace is None or tool.namespace != ref.get("name"):
                continue
        elif not same_tool_type(kind, entry.get("type")):
            continue
        if "name" in ref and kind in ("function", "custom") and (
                entry.get("name") != ref["name"] or ref.get("namespace", tool.namespace) != tool.namespace):
            continue
        if ref.get("server_label") and entry.get("server_label") != ref["server_label"]:
            continue
        matched.append(tool)
    if "name" in ref and kind in ("function", "custom") and "namespace" not in ref \
            and any(t.namespace is None for t in matched):
        matched = [t for t in matched if t.namespace is None]  # a top-level tool of that name wins
    out: set[str] = set()
    for tool in matched:
        for fn in tool.functions():
            name = fn["function"]["name"]
            if kind == "mcp" and ref.get("name") and not name.endswith("__" + ref["name"]):
                continue
            out.add(name)
    return out
