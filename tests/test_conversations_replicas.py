"""Conversations shared by two replicas on one PostgreSQL (see test_replicas.py for the set-up)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from harness import ScriptedEngine, wait_for, wire
from test_replicas import database, pair, read_until, replica, sdk

__all__ = ["database", "pair"]  # fixtures, shared with test_replicas.py


def texts(server, cid: str) -> list[str]:  # type: ignore[no-untyped-def]
    return [wire(i)["content"][0]["text"] for i in sdk(server).conversations.items.list(cid, order="asc")]


def test_a_conversation_continues_on_any_replica(pair, script) -> None:
    a, b = pair
    conv = sdk(a).conversations.create(items=[{"role": "user", "content": "on A"}])
    script.add({"content": "one"}, {"content": "two"}, {"content": "three"})
    sdk(b).responses.create(model="m", conversation=conv.id, input="q1")
    assert texts(a, conv.id) == ["on A", "q1", "one"]
    sdk(a).responses.create(model="m", conversation=conv.id, input="q2")  # A now knows this state
    sdk(b).conversations.items.create(conv.id, items=[{"role": "user", "content": "added on B"}])
    first = wire(next(iter(sdk(b).conversations.items.list(conv.id, order="asc"))))
    sdk(b).conversations.items.delete(first["id"], conversation_id=conv.id)
    sdk(a).responses.create(model="m", conversation=conv.id, input="q3")
    # A saw B's addition and B's deletion, not the items it had read before.
    assert [m["content"] for m in script.requests[-1]["messages"]] == ["q1", "one", "q2", "two", "added on B", "q3"]
    assert texts(b, conv.id) == ["q1", "one", "q2", "two", "added on B", "q3", "three"]


def test_one_response_at_a_time_across_replicas(pair, script) -> None:
    a, b = pair
    conv = sdk(a).conversations.create()
    script.add({"content": "never", "hang": True})
    running = sdk(a).responses.create(model="m", conversation=conv.id, input="slow", background=True)
    for call in (lambda: sdk(b).responses.create(model="m", conversation=conv.id, input="second"),
                 lambda: sdk(b).conversations.items.create(conv.id, items=[{"role": "user", "content": "x"}])):
        with pytest.raises(openai.BadRequestError) as e:
            call()
        assert e.value.body["code"] == "conversation_locked"
    assert sdk(b).responses.cancel(running.id).status == "cancelled"
    assert sdk(b).responses.create(model="m", conversation=conv.id, input="now").output_text == "Echo: now"
    assert texts(a, conv.id) == ["now", "Echo: now"]


def test_a_replica_dying_mid_response_frees_its_conversation(database: str, pair, engine: ScriptedEngine, script,
                                                             tmp_path: Path) -> None:
    _, b = pair
    a = replica(tmp_path, "doomed", database, engine)
    a.start()
    try:
        conv = sdk(b).conversations.create(items=[{"role": "user", "content": "kept"}])
        script.add({"content": "never", "hang": True})
        stream = sdk(a).responses.create(model="m", conversation=conv.id, input="lost", stream=True)
        rid = read_until(stream, lambda ev: ev["type"] == "response.created")[-1]["response"]["id"]
        with pytest.raises(openai.BadRequestError):
            sdk(b).responses.create(model="m", conversation=conv.id, input="too soon")
        a.kill()
        # Once A's lease runs out, B ends A's response as failed, which frees the conversation.
        assert wait_for(lambda: sdk(b).responses.retrieve(rid).status == "failed", timeout=20)
        assert sdk(b).responses.create(model="m", conversation=conv.id, input="after").status == "completed"
        assert texts(b, conv.id) == ["kept", "after", "Echo: after"]
    finally:
        a.kill()
