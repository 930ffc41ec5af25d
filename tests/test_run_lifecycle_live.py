"""A response's life end to end: deleting one while it runs, and chaining on a stream that has
only just started (issue 21, Data)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from harness import KEY_A, wait_for
from openai import OpenAI


def stays_gone(client: OpenAI, rid: str, seconds: float = 1.0) -> None:
    """The response is not found now and for `seconds` more (a late write would bring it back)."""
    deadline = time.monotonic() + seconds
    while True:
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(rid)
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def test_deleting_a_running_background_response_stops_it_and_it_stays_deleted(client: OpenAI, server,
                                                                               script) -> None:
    script.add({"content": " ".join(f"t{i}" for i in range(40)), "delay": 0.05})
    r = client.responses.create(model="m", input="x", background=True)
    wait_for(lambda: client.responses.retrieve(r.id).status == "in_progress")
    deleted = client.responses.delete(r.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    wait_for(lambda: script.aborted == 1)  # the engine was stopped, not left to finish
    stays_gone(client, r.id)
    # Nor do its events come back: the stored stream is gone with it.
    resp = httpx.get(f"{server.base_url}/responses/{r.id}", params={"stream": "true", "starting_after": "-1"},
                     headers={"Authorization": f"Bearer {KEY_A}"})
    assert resp.status_code == 404


def test_deleting_a_running_stream_ends_it_and_it_stays_deleted(client: OpenAI, script) -> None:
    script.add({"content": " ".join(f"t{i}" for i in range(40)), "delay": 0.05})
    stream = client.responses.create(model="m", input="x", stream=True)
    it = iter(stream)
    created = next(it)
    assert created.type == "response.created"
    rid = created.response.id
    next(e for e in it if e.type == "response.output_text.delta")
    client.responses.delete(rid)
    rest = list(it)  # the stream ends (as for a cancel: no terminal event)
    assert not any(e.type in ("response.completed", "response.failed") for e in rest)
    wait_for(lambda: script.aborted == 1)
    stays_gone(client, rid)


def test_deleting_another_keys_running_response_is_404(client: OpenAI, other_client: OpenAI, script) -> None:
    script.add({"content": " ".join(f"t{i}" for i in range(20)), "delay": 0.05})
    r = client.responses.create(model="m", input="x", background=True)
    with pytest.raises(openai.NotFoundError):
        other_client.responses.delete(r.id)
    final = wait_for(lambda: (x := client.responses.retrieve(r.id)).status == "completed" and x)
    assert final.output_text.startswith("t0")


def test_chaining_on_a_stream_that_just_started_is_in_progress_not_unknown(client: OpenAI, script) -> None:
    script.add({"content": " ".join(f"t{i}" for i in range(20)), "delay": 0.05})
    stream = client.responses.create(model="m", input="x", stream=True)
    it = iter(stream)
    created = next(it)
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="m", input="next", previous_response_id=created.response.id)
    assert e.value.code == "previous_response_in_progress"
    assert e.value.body["param"] == "previous_response_id"
    final = [e for e in it][-1]
    assert final.type == "response.completed"
    # Once it has ended, the chain continues.
    follow = client.responses.create(model="m", input="next", previous_response_id=created.response.id)
    assert follow.status == "completed"
