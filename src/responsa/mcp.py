"""Remote MCP servers as tools: list a server's tools, ask for approval, call them.

An `mcp` tool entry names a server (`server_label`, `server_url`). Before the first turn the
tool lists the server's tools as an `mcp_list_tools` item (a chain that already listed this
label reuses that listing and emits nothing) and runs the calls the user approved with
`mcp_approval_response` items since the last response. The model sees each listed tool as a
function named `mcp__<label>__<tool>`; a call that needs approval becomes an
`mcp_approval_request` item that ends the response, any other runs at once as an `mcp_call`.

The official `mcp` SDK is the client: Streamable HTTP first, then the older SSE transport
when the server answers Streamable HTTP with a 4xx that means "not here" (404, 405...).
Each listing and each call opens its own connection, bounded by --mcp-timeout. `headers`
and `authorization` go to the MCP server only: `public()` removes them from what is stored
and echoed, and they appear in no log line or error message.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from . import __version__, tracecontext
from . import checks as c
from .chat import mcp_function_name
from .errors import APIError, InvalidRequest
from .ids import new_id
from .netguard import Guard
from .tools import Outcome, Tool, ToolCall, ToolContext, ToolKind

log = logging.getLogger("responsa.mcp")

# A label becomes part of function names (`mcp__<label>__<tool>`), so no `__` inside it and
# no `_` at its ends: then no two (label, tool) pairs give the same name.
LABEL = re.compile(r"^[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*$")
# RFC 9110: a header name is a token; a value is visible ASCII with inner spaces and tabs.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Header values shorter than this are not looked for in error text (they would mangle it).
MIN_REDACTED = 8
PARAM_KEY = "_param"
SECRET_KEYS = ("headers", "authorization", PARAM_KEY)
# Streamable HTTP answers meaning "this URL speaks something else": try the SSE transport.
FALLBACK_STATUSES = frozenset({400, 404, 405, 406, 415})
MAX_PAGES = 20


class ListingFailed(APIError):
    """A server's tools could not be listed: the response fails, naming the server."""

    status = 424
    type = "server_error"
    code = "server_error"  # the only code the SDKs' `ResponseError` allows for this


# ---- the tool entry --------------------------------------------------------------------------

# What the operator's metrics hear of each round trip to an MCP server: ("list_tools" or
# "call", seconds). Set by the composition root when metrics are on.
Observer = Callable[[str, float], None]


class MCPKind(ToolKind):
    """`{"type": "mcp", ...}` tool entries."""

    types = ("mcp",)

    def __init__(self, observe: Observer | None = None) -> None:
        self.observe = observe

    def check_history(self, history: Sequence[dict], tools: Sequence[Tool], new_from: int) -> None:
        """Approval responses in the request's input (`history[new_from:]`; earlier ones were
        checked when they were new) must answer known requests a tool here can run."""
        for i in range(new_from, len(history)):
            if history[i].get("type") == "mcp_approval_response":
                check_approvals(history, tools)
                return

    def check(self, entry: dict, param: str) -> dict:
        label = c.string(entry, "server_label", f"{param}.server_label", required=True,
                         allow_empty=False) or ""
        if len(label) > 64 or not LABEL.match(label):
            raise InvalidRequest(
                f"Invalid '{param}.server_label': use 1-64 letters, digits, '-' and single '_' between them "
                "(no '__', no leading or trailing '_').", param=f"{param}.server_label", code="invalid_value")
        for key in ("connector_id", "tunnel_id"):
            if entry.get(key) is not None:
                raise InvalidRequest(f"'{param}.{key}' is not supported by this server; give a 'server_url'.",
                                     param=f"{param}.{key}", code="unsupported_value")
        url = c.url(c.string(entry, "server_url", f"{param}.server_url", required=True) or "",
                    f"{param}.server_url")
        headers = c.mapping(entry, "headers", f"{param}.headers")
        for n, (name, value) in enumerate((headers or {}).items(), 1):
            if not HEADER_NAME.fullmatch(name):
                # Not shown: a pasted "Authorization: Bearer ..." would be the secret itself.
                raise InvalidRequest(f"Invalid '{param}.headers': the name of header #{n} is not a valid HTTP "
                                     "header name (letters, digits and !#$%&'*+-.^_`|~ only); it is not repeated "
                                     "here in case it holds a secret.", param=f"{param}.headers",
                                     code="invalid_value")
            if not isinstance(value, str):
                raise c.wrong_type(f"{param}.headers.{name}", "a string", value)
            _check_header_value(value, f"{param}.headers.{name}")
        out: dict[str, Any] = {
            "type": "mcp", "server_label": label, "server_url": url,
            "allowed_tools": _check_allowed(entry.get("allowed_tools"), f"{param}.allowed_tools"),
            "require_approval": _check_approval(entry.get("require_approval"), f"{param}.require_approval"),
            "server_description": c.string(entry, "server_description", f"{param}.server_description"),
        }
        out[PARAM_KEY] = param  # for errors found later (validate); never echoed
        if headers:
            out["headers"] = dict(headers)
        authorization = c.string(entry, "authorization", f"{param}.authorization")
        if authorization:
            _check_header_value(authorization, f"{param}.authorization")
            out["authorization"] = authorization
        return out

    def public(self, entry: dict) -> dict:
        return {k: v for k, v in entry.items() if k not in SECRET_KEYS}

    def build(self, entry: dict, ctx: ToolContext) -> MCPTool:
        return MCPTool(entry, self.observe)


def _check_header_value(value: str, param: str) -> None:
    """Refuse what HTTP cannot send (copy-paste slips, mostly), describing the problem, never the value."""
    problem = None
    if not value.isascii():
        problem = "has a character that is not ASCII"
    elif "\r" in value or "\n" in value:
        problem = "has a line break"
    elif HEADER_CONTROL.search(value):
        problem = "has a control character (such as NUL)"
    elif value != value.strip(" \t"):
        problem = "starts or ends with whitespace"
    if problem is not None:
        raise InvalidRequest(f"Invalid '{param}': the value {problem}, which an HTTP header cannot carry. "
                             "(The value is not repeated here.)", param=param, code="invalid_value")


def _check_filter(value: Any, param: str) -> dict:
    if not isinstance(value, dict):
        raise c.wrong_type(param, "an object", value)
    out: dict[str, Any] = {}
    names = c.string_list(value, "tool_names", f"{param}.tool_names")
    if names is not None:
        out["tool_names"] = names
    read_only = c.boolean(value, "read_only", f"{param}.read_only")
    if read_only is not None:
        out["read_only"] = read_only
    return out


def _check_allowed(value: Any, param: str) -> list[str] | dict | None:
    if value is None:
        return None
    if isinstance(value, list):
        return c.string_list({"v": value}, "v", param)
    return _check_filter(value, param)


def _check_approval(value: Any, param: str) -> str | dict:
    if value is None:
        return "always"
    if isinstance(value, str):
        if value not in ("always", "never"):
            raise c.bad_value(param, value, ("always", "never"))
        return value
    if not isinstance(value, dict):
        raise c.wrong_type(param, "'always', 'never' or an object", value)
    out = {}
    for key in ("always", "never"):
        if value.get(key) is not None:
            out[key] = _check_filter(value[key], f"{param}.{key}")
    return out


def _matches(flt: dict | None, tool: dict) -> bool:
    """Whether a `{tool_names?, read_only?}` filter selects a listed tool (both must hold)."""
    if flt is None:
        return False
    if "tool_names" in flt and tool["name"] not in flt["tool_names"]:
        return False
    if "read_only" in flt and bool((tool.get("annotations") or {}).get("readOnlyHint")) != flt["read_only"]:
        return False
    return True


# ---- one run's MCP server ---------------------------------------------------------------------

class MCPTool(Tool):
    """One MCP server for one run: its listing, the functions it offers, and its calls."""

    def __init__(self, entry: dict, observe: Observer | None = None) -> None:
        self.entry = entry
        self.observe = observe
        self.label: str = entry["server_label"]
        self.tools: list[dict] = []  # the listing, filtered by allowed_tools
        self._by_function: dict[str, dict] = {}

    # -- what the model sees

    def functions(self) -> list[dict]:
        out = []
        for name, tool in self._by_function.items():
            fn: dict[str, Any] = {"name": name, "parameters": _parameters(tool.get("input_schema"))}
            description = (tool.get("description")
                           or f"The '{tool['name']}' tool of MCP server '{self.label}'.")
            if self.entry.get("server_description"):
                description += f"\n(MCP server '{self.label}': {self.entry['server_description']})"
            fn["description"] = description
            out.append({"type": "function", "function": fn})
        return out

    def _offer(self, tools: Sequence[dict]) -> None:
        self.tools = [t for t in tools if self._allowed(t)]
        self._by_function = {mcp_function_name(self.label, t["name"]): t for t in self.tools}

    def _allowed(self, tool: dict) -> bool:
        allowed = self.entry.get("allowed_tools")
        if allowed is None:
            return True
        if isinstance(allowed, list):
            return tool["name"] in allowed
        return _matches(allowed, tool)

    def needs_approval(self, tool: dict) -> bool:
        policy = self.entry.get("require_approval") or "always"
        if isinstance(policy, str):
            return policy == "always"
        if _matches(policy.get("always"), tool):
            return True
        return not _matches(policy.get("never"), tool)

    # -- before the response exists, before the first turn, per call

    async def validate(self, ctx: ToolContext) -> None:
        """Refuse, as a 400, a server on a private address (unless allowed)."""
        await ctx.guard.check_url(self.entry["server_url"],
                                  param=f"{self.entry.get(PARAM_KEY, 'tools')}.server_url", what="MCP server URL")

    async def prepare(self, ctx: ToolContext) -> None:
        listed = _last_listing(ctx.history, self.label)
        if listed is not None:
            self._offer(listed["tools"])
        else:
            await self._list(ctx)
        for request in _approved(ctx.history, self.label):
            await self._run(ctx, request["name"], request.get("arguments") or "{}", request["id"])

    async def invoke(self, call: ToolCall, ctx: ToolContext) -> Outcome:
        tool = self._by_function[call.name]
        if _arguments(call.arguments) is not None and self.needs_approval(tool):
            index = ctx.events.add_item({"id": new_id("mcpr"), "type": "mcp_approval_request",
                                         "server_label": self.label, "name": tool["name"],
                                         "arguments": call.arguments})
            ctx.events.done_item(index)
            return Outcome.STOP
        await self._run(ctx, tool["name"], call.arguments, None)
        return Outcome.CONTINUE

    # -- the two things sent to the server

    async def _list(self, ctx: ToolContext) -> None:
        events = ctx.events
        item: dict[str, Any] = {"id": new_id("mcpl"), "type": "mcp_list_tools", "server_label": self.label,
                                "tools": []}
        index = events.add_item(item)
        events.item_event("response.mcp_list_tools.in_progress", index)
        await events.flush()
        started = time.perf_counter()
        try:
            tools = await self._connection(ctx).list_tools()
        except ServerFailure as e:
            item["error"] = f"Error retrieving tool list from MCP server '{self.label}': {e}"
            events.item_event("response.mcp_list_tools.failed", index)
            events.done_item(index)
            log.warning("%s", item["error"])
            raise ListingFailed(item["error"]) from None
        finally:
            if self.observe is not None:
                self.observe("list_tools", time.perf_counter() - started)
        self._offer(tools)
        item["tools"] = self.tools
        events.item_event("response.mcp_list_tools.completed", index)
        events.done_item(index)

    async def _run(self, ctx: ToolContext, name: str, arguments: str,
                   approval_request_id: str | None) -> None:
        """Call one tool, as an `mcp_call` item; a failure is the item's `error`, not the run's."""
        events = ctx.events
        item: dict[str, Any] = {"id": new_id("mcp"), "type": "mcp_call", "status": "in_progress",
                                "server_label": self.label, "name": name, "arguments": "",
                                "approval_request_id": approval_request_id, "output": None, "error": None}
        index = events.add_item(item)
        events.item_event("response.mcp_call.in_progress", index)
        if arguments:
            events.item_event("response.mcp_call_arguments.delta", index, delta=arguments)
        item["arguments"] = arguments
        events.item_event("response.mcp_call_arguments.done", index, arguments=arguments)
        parsed = _arguments(arguments)
        if parsed is None:
            item["error"] = "The arguments are not a JSON object; nothing was sent to the MCP server."
        else:
            item["status"] = "calling"
            await events.flush()
            started = time.perf_counter()
            try:
                output, is_error = await self._connection(ctx).call_tool(name, parsed)
            except ServerFailure as e:
                item["error"] = f"Error calling tool '{name}' on MCP server '{self.label}': {e}"
            else:
                item["output" if not is_error else "error"] = output
            finally:
                if self.observe is not None:
                    self.observe("call", time.perf_counter() - started)
        item["status"] = "failed" if item["error"] is not None else "completed"
        events.item_event("response.mcp_call.failed" if item["error"] is not None else
                          "response.mcp_call.completed", index)
        events.done_item(index)

    def _connection(self, ctx: ToolContext) -> Connection:
        headers = dict(self.entry.get("headers") or {})
        if self.entry.get("authorization"):
            headers["Authorization"] = f"Bearer {self.entry['authorization']}"
        return Connection(self.entry["server_url"], tracecontext.outgoing(headers),  # + traceparent, traces on
                          timeout=float(ctx.settings.mcp_timeout), max_output=ctx.settings.mcp_max_output,
                          guard=ctx.guard)


def _parameters(schema: Any) -> dict:
    if isinstance(schema, dict) and schema.get("type") == "object":
        return schema
    return {"type": "object", "properties": {}}


def _arguments(text: str) -> dict | None:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _last_listing(history: Sequence[dict], label: str) -> dict | None:
    for item in reversed(history):
        if (item.get("type") == "mcp_list_tools" and item.get("server_label") == label
                and not item.get("error")):
            return item
    return None


def check_approvals(history: Sequence[dict], tools: Sequence[Any]) -> None:
    """Refuse (400) approvals of unknown requests, and approved calls no `mcp` tool here can run."""
    requests = {i["id"]: i for i in history if i.get("type") == "mcp_approval_request"}
    labels = {t.label for t in tools if isinstance(t, MCPTool)}
    for item in history:
        if item.get("type") != "mcp_approval_response":
            continue
        request = requests.get(item["approval_request_id"])
        if request is None:
            raise InvalidRequest(
                f"No MCP approval request with id '{item['approval_request_id']}' in this conversation.",
                param="input", code="invalid_value")
        label = request.get("server_label")
        if label not in labels and request in _approved(history, label):
            raise InvalidRequest(
                f"The approved call to MCP server '{label}' needs that server in 'tools' (tools are not "
                "carried over by previous_response_id).", param="tools", code="invalid_value")


def _approved(history: Sequence[dict], label: str | None) -> list[dict]:
    """This server's approval requests that the user approved and that have not run yet."""
    approved = {i["approval_request_id"] for i in history
                if i.get("type") == "mcp_approval_response" and i.get("approve")}
    ran = {i.get("approval_request_id") for i in history if i.get("type") == "mcp_call"}
    return [i for i in history if i.get("type") == "mcp_approval_request" and i.get("server_label") == label
            and i["id"] in approved and i["id"] not in ran]


# ---- the connection (the MCP SDK stays in here) ---------------------------------------------------

class ServerFailure(Exception):
    """Talking to an MCP server failed; the message says how, without secrets."""


class Connection:
    """One MCP server address with its headers; each operation is its own session."""

    def __init__(self, url: str, headers: dict[str, str], *, timeout: float, max_output: int,
                 guard: Guard) -> None:
        self.url, self.headers, self.timeout = url, headers, timeout
        self.max_output, self.guard = max_output, guard
        self.last_status: int | None = None  # of the last HTTP response, for error messages

    async def list_tools(self) -> list[dict]:
        async def run(client: Any) -> list[dict]:
            tools: list[dict] = []
            cursor = None
            for _ in range(MAX_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(_listed(t) for t in page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools

        return await self._with_session(run)

    async def call_tool(self, name: str, arguments: dict) -> tuple[str, bool]:
        """The tool's output text (capped) and whether the tool reported an error."""
        async def run(client: Any) -> tuple[str, bool]:
            result = await client.call_tool(name, arguments)
            return self._cap(_result_text(result)), bool(result.is_error)

        return await self._with_session(run)

    async def _with_session(self, run: Any) -> Any:
        await _load_sdk()
        try:
            await self.guard.check_url(self.url, param="server_url", what="MCP server URL")
            async with asyncio.timeout(self.timeout):
                async with self._session() as client:
                    return await run(client)
        except InvalidRequest as e:
            raise ServerFailure(e.message) from None
        except TimeoutError:
            raise ServerFailure(f"no answer within {self.timeout:g} seconds") from None
        except Exception as e:
            raise ServerFailure(self._describe(e)) from None

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Any]:
        import httpx2
        from mcp import Client, Implementation
        from mcp.client.sse import sse_client
        from mcp.client.streamable_http import streamable_http_client

        info = Implementation(name="responsa", version=__version__)

        async def record(response: Any) -> None:
            self.last_status = response.status_code

        def http_client(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None) -> Any:
            return httpx2.AsyncClient(headers=headers, timeout=timeout or httpx2.Timeout(self.timeout),
                                      auth=auth, verify=_tls, event_hooks={"response": [record]})

        async with AsyncExitStack() as stack:
            client = None
            if self.url not in _sse_urls:
                try:
                    http_ = await stack.enter_async_context(http_client(self.headers))
                    client = await stack.enter_async_context(Client(
                        streamable_http_client(self.url, http_client=http_), read_timeout_seconds=self.timeout,
                        client_info=info))
                except Exception:
                    if self.last_status not in FALLBACK_STATUSES:
                        raise
                    self.last_status = None
            if client is None:
                # Only the older SSE transport is spoken here (its POST endpoint is announced on the stream).
                try:
                    client = await stack.enter_async_context(Client(
                        sse_client(self.url, headers=self.headers, timeout=self.timeout,
                                   sse_read_timeout=self.timeout, httpx_client_factory=http_client),
                        mode="legacy", read_timeout_seconds=self.timeout, client_info=info))
                except Exception:
                    _sse_urls.discard(self.url)  # next time, Streamable HTTP first again
                    raise
                if len(_sse_urls) >= 1000:
                    _sse_urls.clear()
                _sse_urls.add(self.url)
            yield client

    def _describe(self, exc: BaseException) -> str:
        """What went wrong, in words that carry no header value (they are secrets)."""
        text = self._explain(_leaf(exc))
        for value in self.headers.values():
            forms = {value, value.strip(), repr(value)[1:-1], repr(value.encode(errors="replace"))[2:-1],
                     *value.split()}
            for form in sorted(forms, key=len, reverse=True):
                if len(form) >= MIN_REDACTED:
                    text = text.replace(form, "[redacted]")
        return text

    def _explain(self, exc: BaseException) -> str:
        import httpx2
        from mcp import MCPError

        if isinstance(exc, httpx2.LocalProtocolError | UnicodeError):
            # The HTTP client's own words here quote the offending header, value included.
            return "the request could not be sent: a header name or value is not valid in HTTP"
        status = self.last_status
        if isinstance(exc, httpx2.HTTPStatusError):
            status = exc.response.status_code
        if status is not None and status >= 400:
            phrase = _phrase(status)
            if status in (401, 403):
                return f"HTTP {status} {phrase}: the server refused the credentials (check the headers)"
            return f"HTTP {status} {phrase}"
        if isinstance(exc, httpx2.TimeoutException):
            return f"no answer within {self.timeout:g} seconds"
        if isinstance(exc, httpx2.ConnectError):
            return f"cannot connect to {_origin(self.url)} ({exc or 'connection refused'})"
        if isinstance(exc, httpx2.TransportError):
            return f"the connection failed ({type(exc).__name__}: {exc})"
        if isinstance(exc, MCPError):
            return f"MCP protocol error {exc.error.code}: {exc.error.message}"
        return f"protocol error ({type(exc).__name__}: {exc})"

    def _cap(self, text: str) -> str:
        data = text.encode()
        if len(data) <= self.max_output:
            return text
        kept = data[:self.max_output].decode(errors="ignore")
        return f"{kept}\n[output truncated: {len(data)} bytes, the first {self.max_output} kept]"


# URLs that answered Streamable HTTP with "not here" and SSE with a session: go to SSE first.
_sse_urls: set[str] = set()
_tls: Any = None  # one TLS context for every connection: building one takes ~100 ms


async def _load_sdk() -> None:
    """Import the MCP SDK (a second or more, once per process) without blocking the event loop."""
    global _tls
    if _tls is None:
        _tls = await asyncio.to_thread(_import_sdk)


def _import_sdk() -> Any:
    import httpx2
    import mcp.client.sse
    import mcp.client.streamable_http  # noqa: F401

    return httpx2.create_ssl_context()


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the SDK's task-group exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def _listed(tool: Any) -> dict:
    """An MCP SDK `Tool` as an `mcp_list_tools` entry."""
    out: dict[str, Any] = {"name": tool.name, "input_schema": tool.input_schema or {"type": "object"}}
    if tool.description:
        out["description"] = tool.description
    if tool.annotations is not None:
        out["annotations"] = tool.annotations.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out


def _result_text(result: Any) -> str:
    """A `CallToolResult` as text: text blocks joined, other blocks named, else the structured result."""
    parts = []
    for block in result.content or ():
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            text = getattr(block.resource, "text", None)
            parts.append(text if text is not None else f"[resource {block.resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        elif kind in ("image", "audio"):
            parts.append(f"[{kind} {getattr(block, 'mime_type', '')}]".replace(" ]", "]"))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content))
    return "\n".join(parts)


# The SDK's HTTP client logs every request at INFO (and more at DEBUG); Responsa logs MCP
# failures itself, and nothing that could carry a tool's headers.
for _name in ("httpx2", "httpcore2"):
    logging.getLogger(_name).setLevel(logging.WARNING)
