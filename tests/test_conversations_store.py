"""The conversation half of the Store protocol, run against SQLiteStore and PostgresStore alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pg
import pytest

from responsa.errors import InvalidRequest, NotFound
from responsa.store import ConversationRecord, ResponseRecord, Store
from responsa.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

TABLES = "responses, items, events, conversations, conversation_items"


@pytest.fixture(scope="session")
def conv_pg_url() -> Iterator[str]:
    url = pg.create_database("responsa_conv")
    yield url
    pg.drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Store]:
    if request.param == "sqlite":
        return lambda **_kw: SQLiteStore(str(tmp_path / "responsa.db"))
    url = request.getfixturevalue("conv_pg_url")
    from responsa.store.postgres import PostgresStore

    if pg.admin_on(url, "SELECT to_regclass('conversations') IS NOT NULL")[0][0]:
        pg.admin_on(url, f"TRUNCATE {TABLES}")
    return lambda **kw: PostgresStore(url, pool_size=4, **kw)


@pytest.fixture
async def store(make_store: Callable[..., Store], anyio_backend: str) -> AsyncIterator[Store]:
    s = make_store()
    await s.open()
    yield s
    await s.close()


def msg(item_id: str, text: str = "x") -> dict:
    return {"id": item_id, "type": "message", "role": "user", "status": "completed",
            "content": [{"type": "input_text", "text": text}]}


def conversation(cid: str = "conv_1", owner: str = "alice", ttl: int = 3600) -> ConversationRecord:
    now = int(time.time())
    return ConversationRecord(id=cid, owner=owner, created_at=now, expires_at=now + ttl, metadata={"k": "v"})


def response(rid: str, cid: str = "conv_1", owner: str = "alice", *, lease: int = 60,
             status: str = "in_progress") -> ResponseRecord:
    now = int(time.time())
    return ResponseRecord(id=rid, owner=owner, created_at=now, expires_at=now + 7200, status=status,
                          body={"id": rid, "object": "response", "status": status}, conversation_id=cid,
                          lease_owner="me", lease_until=now + lease)


async def ids(store: Store, cid: str = "conv_1", owner: str = "alice") -> list[str]:
    page = await store.list_conversation_items(cid, owner, after=None, limit=100, order="asc")
    assert page is not None
    return [i["id"] for i in page.items]


async def finish(store: Store, rid: str, output: list[dict], status: str = "completed") -> None:
    record = response(rid, status=status)
    record.lease_owner = record.lease_until = None
    await store.save_response(record, output, create=False)


async def test_crud_and_ownership(store: Store) -> None:
    await store.create_conversation(conversation(), [msg("a"), msg("b")])
    got = await store.get_conversation("conv_1", "alice")
    assert got is not None and got.wire()["metadata"] == {"k": "v"}
    assert await store.get_conversation("conv_1", "bob") is None
    assert await store.update_conversation("conv_1", "bob", {}, 0) is None
    updated = await store.update_conversation("conv_1", "alice", {"n": "1"}, int(time.time()) + 9999)
    assert updated is not None and updated.metadata == {"n": "1"} and updated.expires_at > got.expires_at
    assert await store.get_conversation_item("conv_1", "alice", "b") == msg("b")
    assert await store.get_conversation_item("conv_1", "bob", "b") is None
    assert not await store.add_conversation_items("conv_1", "bob", [msg("c")], 0)
    assert not await store.delete_conversation_item("conv_1", "bob", "a")
    assert await store.list_conversation_items("conv_1", "bob", after=None, limit=10, order="asc") is None
    assert not await store.delete_conversation("conv_1", "bob")
    assert await store.delete_conversation("conv_1", "alice")
    assert await store.get_conversation("conv_1", "alice") is None
    assert await store.load_conversation("conv_1", "alice") is None
    assert not await store.delete_conversation("conv_1", "alice")


async def test_items_pages_and_duplicates(store: Store) -> None:
    await store.create_conversation(conversation(), [msg(f"i{n}") for n in range(5)])
    assert await store.add_conversation_items("conv_1", "alice", [msg("i5"), msg("i6")], 0)
    assert await ids(store) == [f"i{n}" for n in range(7)]
    page = await store.list_conversation_items("conv_1", "alice", after="i2", limit=3, order="asc")
    assert page is not None and [i["id"] for i in page.items] == ["i3", "i4", "i5"] and page.has_more
    page = await store.list_conversation_items("conv_1", "alice", after="i2", limit=3, order="desc")
    assert page is not None and [i["id"] for i in page.items] == ["i1", "i0"] and not page.has_more
    page = await store.list_conversation_items("conv_1", "alice", after="nope", limit=3, order="desc")
    assert page is not None and page.items == []
    with pytest.raises(InvalidRequest) as e:
        await store.add_conversation_items("conv_1", "alice", [msg("new"), msg("i3")], 0)
    assert e.value.param == "items[1]" and e.value.code == "duplicate_item"
    assert await ids(store) == [f"i{n}" for n in range(7)]  # nothing of the refused call


async def test_load_returns_what_is_new_since_a_known_state(store: Store) -> None:
    await store.create_conversation(conversation(), [msg("a"), msg("b")])
    first = await store.load_conversation("conv_1", "alice")
    assert first is not None and not first.delta and [i["id"] for i in first.items] == ["a", "b"]
    state = (first.revision, first.next_position)
    same = await store.load_conversation("conv_1", "alice", state)
    assert same is not None and same.delta and same.items == []
    await store.add_conversation_items("conv_1", "alice", [msg("c")], 0)
    grown = await store.load_conversation("conv_1", "alice", state)
    assert grown is not None and grown.delta and [i["id"] for i in grown.items] == ["c"]
    assert await store.delete_conversation_item("conv_1", "alice", "a")
    assert not await store.delete_conversation_item("conv_1", "alice", "a")
    after_delete = await store.load_conversation("conv_1", "alice", (grown.revision, grown.next_position))
    assert after_delete is not None and not after_delete.delta
    assert [i["id"] for i in after_delete.items] == ["b", "c"] and after_delete.revision != grown.revision


async def test_a_response_holds_its_conversation_and_appends_once(store: Store) -> None:
    await store.create_conversation(conversation(), [msg("a")])
    state = await store.load_conversation("conv_1", "alice")
    assert state is not None
    at = (state.revision, state.next_position)
    await store.begin_conversation_response(response("resp_1"), [msg("in1")], at)
    record = await store.get_record("resp_1", "alice")
    assert record is not None and record.status == "in_progress" and record.conversation_id == "conv_1"
    with pytest.raises(InvalidRequest) as e:
        await store.begin_conversation_response(response("resp_2"), [msg("in2")], at)
    assert e.value.code == "conversation_locked" and e.value.param == "conversation"
    assert await store.get_record("resp_2", "alice") is None
    with pytest.raises(InvalidRequest):
        await store.add_conversation_items("conv_1", "alice", [msg("x")], 0)
    with pytest.raises(InvalidRequest):
        await store.delete_conversation_item("conv_1", "alice", "a")
    # The same response again (a queued run started anew) keeps what was stored.
    await store.begin_conversation_response(response("resp_1"), [msg("other")], at)
    await finish(store, "resp_1", [msg("out1")])
    await finish(store, "resp_1", [msg("out1")])  # a repeated terminal write appends nothing more
    assert await ids(store) == ["a", "in1", "out1"]
    assert (await store.load_conversation("conv_1", "alice")).next_position == 3  # type: ignore[union-attr]
    assert (await store.get_response("resp_1", "alice"))["output"] == [msg("out1")]  # type: ignore[index]
    with pytest.raises(InvalidRequest):  # the state it was read at is gone
        await store.begin_conversation_response(response("resp_2"), [msg("in2")], at)
    now = await store.load_conversation("conv_1", "alice")
    assert now is not None
    await store.begin_conversation_response(response("resp_2"), [msg("in2")], (now.revision, now.next_position))


async def test_failed_and_cancelled_append_nothing(store: Store) -> None:
    await store.create_conversation(conversation(), [])
    for n, status in enumerate(("failed", "cancelled", "incomplete")):
        state = await store.load_conversation("conv_1", "alice")
        assert state is not None
        await store.begin_conversation_response(response(f"resp_{n}"), [msg(f"in{n}")],
                                                (state.revision, state.next_position))
        await finish(store, f"resp_{n}", [msg(f"out{n}")], status)
    assert await ids(store) == ["in2", "out2"]


async def test_unknown_foreign_or_expired_conversation(store: Store) -> None:
    await store.create_conversation(conversation("conv_old", ttl=-1), [msg("a")])
    await store.create_conversation(conversation("conv_1"), [])
    for cid, owner in (("conv_none", "alice"), ("conv_1", "bob"), ("conv_old", "alice")):
        with pytest.raises(NotFound):
            await store.begin_conversation_response(response("resp_x", cid, owner), [], (0, 0))
        assert await store.get_conversation(cid, owner) is None
        assert await store.load_conversation(cid, owner) is None
    assert await store.get_record("resp_x", "alice") is None


async def test_deleting_the_response_or_its_lease_lapsing_frees_the_conversation(store: Store) -> None:
    await store.create_conversation(conversation(), [])
    await store.begin_conversation_response(response("resp_1"), [msg("in")], (0, 0))
    assert await store.delete_response("resp_1", "alice")
    assert await store.add_conversation_items("conv_1", "alice", [msg("x")], 0)
    await store.begin_conversation_response(response("resp_2", lease=-5), [msg("in2")], (0, 1))
    assert await store.add_conversation_items("conv_1", "alice", [msg("y")], 0)  # its lease lapsed
    await store.begin_conversation_response(response("resp_3"), [msg("in3")], (0, 2))
    await finish(store, "resp_2", [msg("late")])  # another response took the conversation: nothing appended
    await finish(store, "resp_3", [msg("out3")])
    assert await ids(store) == ["x", "y", "in3", "out3"]
    assert (await store.get_response("resp_2", "alice"))["status"] == "completed"  # type: ignore[index]


async def test_renewing_the_response_lease_keeps_the_conversation(store: Store) -> None:
    await store.create_conversation(conversation(), [])
    await store.begin_conversation_response(response("resp_1", lease=-5), [], (0, 0))
    assert await store.renew_leases("me", int(time.time()) + 60) == []
    with pytest.raises(InvalidRequest):
        await store.add_conversation_items("conv_1", "alice", [msg("x")], 0)


async def test_purge(store: Store) -> None:
    await store.create_conversation(conversation("conv_old", ttl=-1), [msg("a"), msg("b")])
    await store.create_conversation(conversation("conv_1"), [msg("c")])
    assert await store.purge_expired(int(time.time())) == 1
    assert await ids(store) == ["c"]
    await store.create_conversation(conversation("conv_old", ttl=10), [msg("a")])  # the id and items were freed


async def test_replicas_race_for_one_conversation(conv_pg_url: str, anyio_backend: str) -> None:
    from responsa.store.postgres import PostgresStore

    a, b = PostgresStore(conv_pg_url, pool_size=2), PostgresStore(conv_pg_url, pool_size=2)
    await a.open()
    await b.open()
    try:
        await a.create_conversation(conversation("conv_race"), [])
        for n in range(5):
            results = await asyncio.gather(
                a.begin_conversation_response(response(f"resp_a{n}", "conv_race"), [msg(f"a{n}")], (0, 0)),
                b.begin_conversation_response(response(f"resp_b{n}", "conv_race"), [msg(f"b{n}")], (0, 0)),
                return_exceptions=True)
            assert sorted(type(r).__name__ for r in results) == ["InvalidRequest", "NoneType"], results
            assert await a.delete_response(f"resp_a{n}" if results[0] is None else f"resp_b{n}", "alice")
    finally:
        await a.delete_conversation("conv_race", "alice")
        await a.close()
        await b.close()


async def test_load_is_one_round_trip_on_postgres(conv_pg_url: str, anyio_backend: str) -> None:
    from responsa.store.postgres import PostgresStore

    queries: list[str] = []
    s = PostgresStore(conv_pg_url, pool_size=2, query_logger=queries.append)
    await s.open()
    try:
        await s.create_conversation(conversation("conv_rt"), [msg(f"r{n}") for n in range(50)])
        await pg.logged()
        queries.clear()
        state = await s.load_conversation("conv_rt", "alice")
        assert state is not None and len(state.items) == 50
        await s.load_conversation("conv_rt", "alice", (state.revision, state.next_position))
        await pg.logged()
        assert len(queries) == 2, queries
    finally:
        await s.delete_conversation("conv_rt", "alice")
        await s.close()


async def test_list_conversations(store: Store) -> None:
    now = int(time.time())
    for n in range(4):
        await store.create_conversation(ConversationRecord(f"conv_{n}", "alice", now + n, now + 3600, {}), [])
    await store.create_conversation(ConversationRecord("conv_bob", "bob", now + 9, now + 3600, {}), [])
    await store.create_conversation(ConversationRecord("conv_old", "alice", now - 100, now - 1, {}), [])

    async def ids(owner: str | None = "alice", **kw: object) -> tuple[list[str], bool]:
        args: dict = {"after": None, "limit": 20, **kw}
        found, more = await store.list_conversations(owner, **args)
        return [c.id for c in found], more

    assert await ids() == (["conv_3", "conv_2", "conv_1", "conv_0"], False)
    assert await ids(limit=2) == (["conv_3", "conv_2"], True)
    assert await ids(after="conv_2") == (["conv_1", "conv_0"], False)
    assert await ids(after="conv_bob") == ([], False)  # another owner's cursor
    assert await ids(after="conv_\x00") == ([], False)
    assert await ids("bob") == (["conv_bob"], False)
    assert await ids(None, limit=2) == (["conv_bob", "conv_3"], True)
    assert await ids(None, after="conv_bob", limit=1) == (["conv_3"], True)
