"""Conversation items in Responses form -> Chat Completions messages. Pure functions.

Every backend speaks Chat Completions messages (the embedded engine applies its chat
template to them), so this is the one place that decides how each item type reaches a
model. Item types that carry nothing a model can use (echoes of hosted tools this server
does not run, MCP listings) are left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ChatOptions:
    # How reasoning items go back to the engine: dropped, or as a field of the next
    # assistant message (`reasoning_content` for vLLM/SGLang/DeepSeek, `reasoning` for Ollama).
    reasoning_input: str = "drop"
    # Engines whose templates accept only one system message, first.
    merge_system: bool = False


def mcp_function_name(server_label: str, tool_name: str) -> str:
    """The function name the model sees for an MCP server's tool.

    MCP tool names may be long or hold characters function names may not ('.', '/'); those
    are replaced and a hash of the full name added, so distinct tools keep distinct names."""
    import re

    name = f"mcp__{server_label}__{tool_name}"
    if len(name) <= 64 and re.fullmatch(r"[A-Za-z0-9_-]+", name):
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:55] + "_" + digest


def text_of(content: Any) -> str:
    """The text of a content list (or string), parts joined by newlines."""
    if isinstance(content, str):
        return content
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


def to_messages(items: Sequence[dict], instructions: str | None = None,
                options: ChatOptions = ChatOptions()) -> list[dict]:
    """Build the Chat Completions `messages` for a conversation."""
    out: list[dict] = []
    if instructions:
        out.append({"role": "system", "content": instructions})
    pending_reasoning: list[str] = []
    approvals = {i["approval_request_id"]: i for i in items if i.get("type") == "mcp_approval_response"}
    answered = {i.get("approval_request_id") for i in items if i.get("type") == "mcp_call"}

    def assistant() -> dict:
        """The assistant message to add tool calls to: the last one, or a new one."""
        if out and out[-1]["role"] == "assistant" and not pending_reasoning:
            return out[-1]
        msg: dict[str, Any] = {"role": "assistant", "content": None}
        if pending_reasoning and options.reasoning_input != "drop":
            msg[options.reasoning_input] = "\n".join(pending_reasoning)
        pending_reasoning.clear()
        out.append(msg)
        return msg

    def tool_call(call_id: str, name: str, arguments: str) -> None:
        msg = assistant()
        msg.setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})

    def tool_result(call_id: str, content: Any) -> None:
        text = content if isinstance(content, str) else text_of(content)
        out.append({"role": "tool", "tool_call_id": call_id, "content": text})
        # Tool messages carry text only: images and files follow as a user message.
        media = [p for p in content if p.get("type") in ("input_image", "input_file")] \
            if isinstance(content, list) else []
        if media:
            out.append({"role": "user", "content": user_content(media)})

    for item in items:
        kind = item.get("type")
        if kind == "message":
            role = item.get("role")
            if role == "assistant":
                text = text_of(item.get("content"))
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
                pending_reasoning.append(text)
        elif kind == "function_call":
            tool_call(item["call_id"], item["name"], item.get("arguments") or "{}")
        elif kind == "custom_tool_call":
            tool_call(item["call_id"], item["name"], json.dumps({"input": item.get("input", "")}))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            tool_result(item["call_id"], item.get("output", ""))
        elif kind == "mcp_call":
            call_id = item.get("approval_request_id") or item["id"]
            tool_call(call_id, mcp_function_name(item["server_label"], item["name"]), item.get("arguments") or "{}")
            result = item.get("output") if item.get("error") is None else f"Error: {item['error']}"
            tool_result(call_id, result or "")
        elif kind == "mcp_approval_request":
            if item["id"] in answered:
                continue  # the mcp_call that ran after approval carries the call and its result
            response = approvals.get(item["id"])
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
    if options.merge_system:
        out = _merge_system(out)
    return out


def _merge_system(messages: list[dict]) -> list[dict]:
    """Fold every system message into one at the start (for strict chat templates)."""
    system = [m["content"] for m in messages if m["role"] == "system" and isinstance(m["content"], str)]
    rest = [m for m in messages if not (m["role"] == "system" and isinstance(m["content"], str))]
    return ([{"role": "system", "content": "\n\n".join(system)}] if system else []) + rest
