"""Use cases about a conversation's context without making a response: compact it
(`POST /responses/compact`) and count its input tokens (`POST /responses/input_tokens`).

Both assemble the context exactly as a create request would (prepare.py: the chain of
`previous_response_id`, sealed reasoning and compaction items opened, item references,
images and files resolved, tools built) and store nothing.
"""

from __future__ import annotations

import time
from typing import Any

from . import checks as c
from .backends import Usage, usage_json
from .compaction import compaction_id, seal, summarize, user_messages
from .errors import InvalidRequest
from .ids import response_id
from .prepare import Preparer
from .protocol import CreateRequest, parse_create
from .reasoning import ReasoningVault
from .run import ResponseRun
from .tokens import count, turn_request

# The parameters each endpoint reads (as `responses.create` reads them); others are ignored,
# among them those that only tune the hosted service (`prompt_cache_key`, `service_tier`, ...).
COMPACT_FIELDS = ("model", "input", "instructions", "previous_response_id")
COUNT_FIELDS = ("model", "input", "instructions", "previous_response_id", "conversation", "reasoning", "text",
                "tool_choice", "tools", "parallel_tool_calls", "truncation")


class ContextService:
    """Compaction and input-token counts over the same preparation as `responses.create`."""

    def __init__(self, preparer: Preparer, vault: ReasoningVault) -> None:
        self.preparer = preparer
        self.vault = vault

    async def _prepare(self, body: Any, fields: tuple[str, ...], owner: str) -> tuple[CreateRequest, ResponseRun]:
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
        if body.get("conversation") is not None and "conversation" in fields:
            # Preparing on a conversation holds it and stores a response (conversations.py).
            raise InvalidRequest("'conversation' is not supported by this endpoint yet; send the items as 'input'.",
                                 param="conversation", code="unsupported_parameter")
        req = parse_create({k: body[k] for k in fields if k in body} | {"store": False})
        run = await self.preparer.prepare(req, owner)
        assert run.spec is not None
        return req, run

    async def compact(self, body: Any, owner: str) -> dict:
        """`response.compaction`: the user messages, then one compaction item holding the summary."""
        req, run = await self._prepare(body, COMPACT_FIELDS, owner)
        spec = run.spec
        assert spec is not None
        if not spec.history:
            raise InvalidRequest("There is nothing to compact: give 'input', 'previous_response_id' or both.",
                                 param="input", code="invalid_value")
        summary, usage = await summarize(spec.backend, spec.model, spec.history, req.instructions)
        item = {"id": compaction_id(), "type": "compaction", "encrypted_content": seal(self.vault, summary, owner)}
        return {"id": response_id(), "object": "response.compaction", "created_at": int(time.time()),
                "output": [*user_messages(spec.tool_ctx.history), item], "usage": usage_json(usage or Usage())}

    async def input_tokens(self, body: Any, owner: str) -> dict:
        """`response.input_tokens`: what the next turn would send the engine, in tokens."""
        if isinstance(body, dict) and body.get("model") is None:
            default = self.preparer.router.default_route
            if default is None or default.model is None:
                c.string(body, "model", "model", required=True)  # the 400 a missing model gets
            body = {**body, "model": default.model if default is not None else None}
        _req, run = await self._prepare(body, COUNT_FIELDS, owner)
        spec = run.spec
        assert spec is not None
        return {"object": "response.input_tokens", "input_tokens": await count(spec.backend,
                                                                                 turn_request(spec, spec.history))}
