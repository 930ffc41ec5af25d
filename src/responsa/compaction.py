"""Compaction: a conversation's earlier turns replaced by a summary the model wrote.

The summary travels in a `compaction` item whose `encrypted_content` is sealed by the
reasoning vault (AES-GCM, bound to the owner's key, tamper-evident, rotated with the
reasoning keys) under its own purpose label, so a reasoning token never opens as a summary.
It is made two ways: `POST /responses/compact` (context.py) returns the conversation's user
messages followed by one compaction item, and `context_management` on create compacts
automatically before the first engine turn once the context crosses its threshold
(`AutoCompaction`, run from the loop through `RunSpec.compaction`).

What the engine gets (`open_context`): before the last compaction item of the conversation,
only the messages the model did not write (user, system and developer messages); the
compaction item as a user message carrying the summary; then everything after it. Assistant
messages, reasoning and tool calls before it are what the summary replaces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .backends import Backend, ModelOptions, TextDelta, TurnEnd, TurnRequest, TurnStart, Usage
from .errors import InvalidRequest, UpstreamError
from .ids import new_id
from .reasoning import ReasoningVault, SealError
from .tokens import count, turn_request

if TYPE_CHECKING:
    from .events import ResponseEvents
    from .loop import RunSpec

PURPOSE = b"responsa/compaction/v1"
# A summary is at most this long: enough for a dense account of a long session.
MAX_SUMMARY_TOKENS = 2048
# Compaction without a `compact_threshold`: at this share of the model's context window where
# the backend knows it (the embedded engine), else at DEFAULT_THRESHOLD tokens.
WINDOW_SHARE = 0.8
DEFAULT_THRESHOLD = 100_000
SUMMARY_HEADER = ("Earlier turns of this conversation were compacted. This is a summary of them, written to "
                  "continue from:\n\n")
PROMPT = (
    "Compact the conversation above so that it can continue in a much smaller context: write a summary that "
    "will replace every earlier turn. Keep what whoever continues needs: the user's goals and requests (the "
    "latest one especially, and whether it has been answered), decisions and constraints, facts and results "
    "learned (tool outputs, file names, commands, numbers), work done and what remains to do. Be complete "
    "but concise, and write notes for whoever continues, not a reply to the user."
)
KEPT_ROLES = frozenset({"user", "system", "developer"})
# Marks the message a compaction item became (never stored or sent: chat.py reads messages'
# role and content only), so that a later compaction drops it with what it summarised.
SUMMARY_MARK = "compaction_summary"


def compaction_id() -> str:
    return new_id("cmp")


def seal(vault: ReasoningVault, summary: str, owner: str) -> str:
    return vault.seal([summary], owner, purpose=PURPOSE)


def _unseal(vault: ReasoningVault, item: dict, owner: str, *, trusted: bool) -> str:
    token = item.get("encrypted_content")
    if not isinstance(token, str):
        raise SealError("invalid")
    texts = vault.unseal(token, owner, purpose=PURPOSE, check_expiry=not trusted)
    if len(texts) != 1:
        raise SealError("invalid")
    return texts[0]


def _bad_item(n: int, item: dict, reason: str) -> InvalidRequest:
    what = f"The encrypted_content of input[{n}] (compaction item '{item.get('id', '')}')"
    why = {
        "invalid": "cannot be decrypted: it was altered, or was not produced by this server's compaction "
                   "with a key it still has",
        "foreign": "was issued to a different API key",
        "expired": "has expired; compact the conversation again",
    }[reason]
    return InvalidRequest(f"{what} {why}.", param=f"input[{n}].encrypted_content", code="invalid_encrypted_content")


def summary_message(item: dict, summary: str) -> dict:
    """The compaction item as the engine reads it: a user message carrying the summary."""
    return {"id": item.get("id") or compaction_id(), "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": SUMMARY_HEADER + summary}], SUMMARY_MARK: True}


def kept(item: dict) -> bool:
    """Whether an item before a compaction item still reaches the engine."""
    return item.get("type") == "message" and item.get("role") in KEPT_ROLES and not item.get(SUMMARY_MARK)


def open_context(vault: ReasoningVault, items: list[dict], owner: str,
                 first_input: int) -> tuple[list[dict], int | None]:
    """The conversation as the engine gets it (see the module docstring), and where its new
    input now starts when everything before that is unchanged by this (else None).

    `items[first_input:]` came with the request: every compaction item there is checked (a
    bad one is a 400 naming it, used or not); earlier ones were stored by this server."""
    last = None
    summary = ""
    for n, item in enumerate(items):
        if item.get("type") != "compaction":
            continue
        trusted = n < first_input
        try:
            text = _unseal(vault, item, owner, trusted=trusted)
        except SealError as e:
            if trusted:  # a stored item this server can no longer open (its key was removed)
                raise InvalidRequest("The conversation holds a compaction item that can no longer be decrypted "
                                     "(the key it was sealed with is gone); start from its user messages again.",
                                     param="previous_response_id", code="invalid_encrypted_content") from None
            raise _bad_item(n - first_input, item, e.reason) from None
        last, summary = n, text
    if last is None:
        return items, first_input
    before = [i for i in items[:last] if kept(i)]
    out = [*before, summary_message(items[last], summary), *items[last + 1:]]
    if last < first_input:
        return out, len(before) + 1 + (first_input - last - 1)
    return out, None


def user_messages(items: Sequence[dict]) -> list[dict]:
    """The user messages of a conversation, as output items (what `/responses/compact` returns)."""
    out = []
    for item in items:
        if item.get("type") == "message" and item.get("role") == "user":
            out.append({"id": item.get("id") or new_id("msg"), "type": "message", "role": "user",
                        "status": "completed", "content": item.get("content") or []})
    return out


async def summarize(backend: Backend, model: str, items: Sequence[dict], instructions: str | None,
                    on_start: Callable[[], None] | None = None) -> tuple[str, Usage | None]:
    """Ask the model for the summary of a conversation; its text and the turn's usage."""
    request = TurnRequest(
        model=model, items=[*items, {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": PROMPT}]}],
        options=ModelOptions(instructions=instructions, stream=False), max_output_tokens=MAX_SUMMARY_TOKENS)
    texts: list[str] = []
    usage: Usage | None = None
    async for ev in backend.turn(request):
        if isinstance(ev, TextDelta):
            texts.append(ev.text)
        elif isinstance(ev, TurnStart) and on_start is not None:
            on_start()
        elif isinstance(ev, TurnEnd):
            usage = ev.usage
    summary = "".join(texts).strip()
    if not summary:
        raise UpstreamError("The model returned an empty summary, so the conversation could not be compacted.")
    return summary, usage


def threshold_for(backend: Backend, model: str, given: int | None) -> int:
    if given is not None:
        return given
    window = getattr(backend, "context_window", None)
    size = window(model) if window is not None else None
    return int(size * WINDOW_SHARE) if size else DEFAULT_THRESHOLD


class AutoCompaction:
    """`context_management: [{"type": "compaction"}]`: before the first engine turn, compact a
    context that has crossed the threshold. The compaction item is the response's next output
    item (`response.output_item.added` and `.done`); the run then goes on with the compacted
    context, and later turns of the chain get it from the stored item."""

    def __init__(self, vault: ReasoningVault, owner: str, threshold: int | None) -> None:
        self.vault = vault
        self.owner = owner
        self.threshold = threshold

    async def __call__(self, spec: RunSpec, history: list[dict], events: ResponseEvents) -> list[dict] | None:
        tokens = await count(spec.backend, turn_request(spec, history, events.output))
        if tokens < threshold_for(spec.backend, spec.model, self.threshold):
            return None
        summary, usage = await summarize(spec.backend, spec.model, history, spec.options.instructions, events.accepted)
        spec.usage.append(usage)
        item = {"id": compaction_id(), "type": "compaction", "encrypted_content": seal(self.vault, summary,
                                                                                         self.owner)}
        index = events.add_item(item)
        events.done_item(index)
        await events.flush()
        spec.history_prefix = None  # the history changed: nothing of an earlier rendering applies
        return [*(i for i in history if kept(i)), summary_message(item, summary)]
