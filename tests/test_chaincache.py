"""A WebSocket connection's cache of responses the store cannot give back."""

from __future__ import annotations

import pytest

from responsa.chaincache import ChainCache
from responsa.errors import InvalidRequest


def response(rid: str, status: str = "completed", text: str = "out") -> dict:
    return {"id": rid, "status": status, "output": [{"type": "message", "role": "assistant", "content": text}]}


def user(text: str) -> dict:
    return {"type": "message", "role": "user", "content": text}


def test_an_unstored_response_is_held_with_its_whole_context() -> None:
    cache = ChainCache()
    first = cache.request()
    first.begin("resp_1", [user("a")], rebuildable=False)
    first.finish(response("resp_1"))
    second = cache.request()
    assert second.items("resp_1") == [user("a"), response("resp_1")["output"][0]]
    second.begin("resp_2", [*(second.items("resp_1") or []), user("b")], rebuildable=False)
    second.finish(response("resp_2", text="two"))
    assert [i["content"] for i in cache.get("resp_2") or []] == ["a", "out", "b", "two"]


def test_stored_failed_and_foreign_responses_are_not_held() -> None:
    cache = ChainCache()
    for rid, rebuildable, final in [("resp_s", True, response("resp_s")),
                                    ("resp_f", False, response("resp_f", status="failed")),
                                    ("resp_x", False, response("resp_other"))]:
        request = cache.request()
        request.begin(rid, [user("a")], rebuildable=rebuildable)
        request.finish(final)
    assert len(cache) == 0
    incomplete = cache.request()
    incomplete.begin("resp_i", [], rebuildable=False)
    incomplete.finish(response("resp_i", status="incomplete"))
    assert "resp_i" in cache


def test_bounded_least_recently_used_first_and_evictable() -> None:
    cache = ChainCache(entries=2)
    cache.add("resp_1", [])
    cache.add("resp_2", [])
    assert cache.get("resp_1") == []  # used: resp_2 is now the oldest
    cache.add("resp_3", [])
    assert "resp_2" not in cache and "resp_1" in cache and "resp_3" in cache
    cache.evict("resp_1")
    cache.evict("resp_unknown")
    assert cache.get("resp_1") is None and len(cache) == 1


def test_a_running_unstored_response_is_in_progress_until_it_ends() -> None:
    cache = ChainCache()
    running = cache.request()
    running.begin("resp_1", [user("a")], rebuildable=False)
    with pytest.raises(InvalidRequest) as e:
        cache.request().items("resp_1")
    assert e.value.code == "previous_response_in_progress" and e.value.param == "previous_response_id"
    running.finish(None)  # ended without a terminal event: not held, and no longer running
    assert cache.request().items("resp_1") is None
    stored = cache.request()
    stored.begin("resp_2", [], rebuildable=True)
    assert cache.request().items("resp_2") is None  # the store answers for it
