"""`namespace` tools: function and custom tools grouped under a name (Codex sends MCP tools so).

Each member reaches the model as a function of its own, named `<namespace>__<name>`
(`chat.namespaced_function_name`: valid for every engine, and no two members share one). The
model's call comes back as the hosted API returns it: a `function_call` (or
`custom_tool_call`) item with the member's own `name` and the `namespace` field set. Members
may be deferred (`defer_loading`) like top-level functions; toolsearch.py loads them.
"""

from __future__ import annotations

from typing import Any

from . import checks as c
from .chat import namespaced_function_name
from .errors import InvalidRequest
from .tools import FUNCTION_NAME, CustomKind, CustomTool, FunctionKind, FunctionTool, Tool, ToolContext, ToolKind

_MEMBER_KINDS: dict[str, ToolKind] = {"function": FunctionKind(), "custom": CustomKind()}


class NamespaceKind(ToolKind):
    """`{"type": "namespace", "name", "description", "tools": [function | custom, ...]}` entries."""

    types = ("namespace",)

    def check(self, entry: dict, param: str) -> dict:
        name = c.string(entry, "name", f"{param}.name", required=True) or ""
        if not FUNCTION_NAME.match(name):
            raise InvalidRequest(f"Invalid '{param}.name': use 1-64 characters a-z, A-Z, 0-9, _ or -.",
                                 param=f"{param}.name", code="invalid_value")
        description = c.string(entry, "description", f"{param}.description", required=True, allow_empty=False)
        members = c.array(entry, "tools", f"{param}.tools", required=True) or []
        if not members:
            raise InvalidRequest(f"Invalid '{param}.tools': empty array. Expected at least one function or "
                                 "custom tool.", param=f"{param}.tools", code="empty_array")
        checked: list[dict] = []
        names: set[str] = set()
        for j, member in enumerate(members):
            member_param = f"{param}.tools[{j}]"
            if not isinstance(member, dict):
                raise c.wrong_type(member_param, "an object", member)
            kind = c.choice(member, "type", f"{member_param}.type", ("function", "custom"), required=True)
            out = _MEMBER_KINDS[kind].check(member, member_param)
            if out["name"] in names:
                raise InvalidRequest(f"Invalid '{param}.tools': duplicate tool name '{out['name']}'.",
                                     param=f"{member_param}.name", code="invalid_value")
            names.add(out["name"])
            checked.append(out)
        return {"type": "namespace", "name": name, "description": description, "tools": checked}

    def names(self, entry: dict) -> list[str]:
        return [namespaced_function_name(entry["name"], member["name"]) for member in entry["tools"]]

    def build(self, entry: dict, ctx: ToolContext) -> list[Tool]:
        return [member_tool(member, entry) for member in entry["tools"]]


def member_tool(member: dict, namespace: dict) -> Tool:
    """The Tool of one member of a checked namespace entry."""
    if member["type"] == "custom":
        return NamespacedCustom(member, namespace)
    return NamespacedFunction(member, namespace)


class Member:
    """What a namespace's members share: the flattened name, and the namespace on their calls."""

    entry: dict
    name: str
    namespace: str | None
    namespace_entry: dict

    def _join(self, namespace: dict) -> None:
        self.namespace_entry = namespace
        self.namespace = namespace["name"]
        self.name = namespaced_function_name(namespace["name"], self.entry["name"])

    def call_name(self, function: str) -> tuple[str, str | None]:
        return self.entry["name"], self.namespace

    def _described(self, functions: list[dict]) -> list[dict]:
        """The functions, their descriptions saying which namespace they belong to (the model sees no
        namespaces, only functions)."""
        note = f"Part of {self.namespace}: {self.namespace_entry['description']}"
        for fn in functions:
            body: dict[str, Any] = fn["function"]
            body["description"] = f"{body['description']}\n\n{note}" if body.get("description") else note
        return functions


class NamespacedFunction(Member, FunctionTool):
    """A namespace's function: a call becomes a `function_call` item with `namespace` set."""

    def __init__(self, entry: dict, namespace: dict) -> None:
        FunctionTool.__init__(self, entry)
        self._join(namespace)

    def functions(self) -> list[dict]:
        return self._described(FunctionTool.functions(self))


class NamespacedCustom(Member, CustomTool):
    """A namespace's custom tool: a call becomes a `custom_tool_call` item with `namespace` set."""

    def __init__(self, entry: dict, namespace: dict) -> None:
        CustomTool.__init__(self, entry)
        self._join(namespace)

    def functions(self) -> list[dict]:
        return self._described(CustomTool.functions(self))
