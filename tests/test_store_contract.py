"""The Store protocol's contract, run against SQLiteStore and PostgresStore alike.

PostgreSQL runs in a throwaway database of this session (see pg.py); its tests skip when
PostgreSQL is unreachable, which CI turns into a failure (RESPONSA_REQUIRE_ALL=1).
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pg
import pytest

from responsa.errors import InvalidRequest, NotFound, ServiceUnavailable
from responsa.store import FileRecord, KeyRecord, Limits, ResponseQuery, ResponseRecord, Store, UsageRow, row_json
from responsa.store.sqlite import SQLiteStore

pytestmark = pytest.mark.anyio

TABLES = "responses, items, events, files, secrets, api_keys, key_usage"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = pg.create_database()
    yield url
    pg.drop_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Store]:
    """Builds stores of one kind on one database (several stores = several processes)."""
    if request.param == "sqlite":
        return lambda **_kw: SQLiteStore(str(tmp_path / "responsa.db"))
    url = request.getfixturevalue("pg_url")
    from responsa.store.postgres import PostgresStore

    if _migrated(url):
        pg.admin_on(url, f"TRUNCATE {TABLES}")
    return lambda **kw: PostgresStore(url, pool_size=4, **kw)


def _migrated(url: str) -> bool:
    return bool(pg.admin_on(url, "SELECT to_regclass('responses') IS NOT NULL")[0][0])


@pytest.fixture
async def store(make_store: Callable[..., Store], anyio_backend: str) -> AsyncIterator[Store]:
    s = make_store()
    await s.open()
    yield s
    await s.close()


def is_pg(store: Store) -> bool:
    return type(store).__name__ == "PostgresStore"


NOW = int(time.time())


def record(rid: str, owner: str = "alice", *, created: int | None = None, ttl: int = 3600,
           status: str = "completed", prev: str | None = None, background: bool = False,
           run_request: dict | None = None, lease_owner: str | None = None,
           lease_until: int | None = None) -> ResponseRecord:
    created = created or int(time.time())
    return ResponseRecord(id=rid, owner=owner, created_at=created, expires_at=created + ttl, status=status,
                          body={"id": rid, "object": "response", "status": status, "metadata": {"n": rid}},
                          background=background, previous_response_id=prev, run_request=run_request,
                          lease_owner=lease_owner, lease_until=lease_until)


def msg(item_id: str, text: str, role: str = "user") -> dict:
    kind = "input_text" if role == "user" else "output_text"
    return {"id": item_id, "type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def texts(items: list[dict]) -> list[str]:
    return [i["content"][0]["text"] for i in items]


async def expired(store: Store, rid: str, owner: str = "alice", **kw: Any) -> None:
    await store.save_response(record(rid, owner, created=NOW - 1000, ttl=100, **kw), [msg(rid + "_o", "old",
                                                                                          "assistant")],
                              [msg(rid + "_i", "old")])


# ---- responses ----------------------------------------------------------------------------------


async def test_save_get_round_trip(store: Store) -> None:
    r = record("resp_1", run_request={"model": "m", "input": "hi"}, prev=None, background=True,
               status="in_progress")
    await store.save_response(r, [msg("o1", "a", "assistant"), msg("o2", "b", "assistant")], [msg("i1", "q")])
    got = await store.get_response("resp_1", "alice")
    assert got is not None
    assert got["metadata"] == {"n": "resp_1"} and got["status"] == "in_progress"
    assert texts(got["output"]) == ["a", "b"]
    rec = await store.get_record("resp_1", "alice")
    assert rec is not None
    assert (rec.id, rec.owner, rec.status, rec.background, rec.previous_response_id) == \
        ("resp_1", "alice", "in_progress", True, None)
    assert rec.run_request == {"model": "m", "input": "hi"}
    assert rec.created_at == r.created_at and rec.expires_at == r.expires_at
    assert rec.body["metadata"] == {"n": "resp_1"}

    # A later save replaces the output (shorter here) and status, and keeps the input items.
    r.status = "completed"
    r.body = {**r.body, "status": "completed"}
    await store.save_response(r, [msg("o1", "final", "assistant")])
    got = await store.get_response("resp_1", "alice")
    assert got is not None and got["status"] == "completed" and texts(got["output"]) == ["final"]
    page = await store.list_input_items("resp_1", "alice", after=None, before=None, limit=10, order="asc")
    assert page is not None and texts(page.items) == ["q"]

    assert await store.get_response("resp_1", "bob") is None
    assert await store.get_record("resp_1", "bob") is None
    assert await store.get_response("resp_unknown", "alice") is None


async def test_response_without_items(store: Store) -> None:
    await store.save_response(record("resp_e"), [])
    got = await store.get_response("resp_e", "alice")
    assert got is not None and got["output"] == []


async def test_expired_is_invisible(store: Store) -> None:
    await expired(store, "resp_x")
    assert await store.get_response("resp_x", "alice") is None
    assert await store.get_record("resp_x", "alice") is None
    assert await store.list_input_items("resp_x", "alice", after=None, before=None, limit=9,
                                        order="asc") is None
    assert await store.find_items("alice", ["resp_x_i", "resp_x_o"]) == {}
    assert await store.delete_response("resp_x", "alice") is False


async def _chain(store: Store, owner: str = "alice") -> None:
    await store.save_response(record("r1", owner), [msg("b1", "one", "assistant")], [msg("a1", "first")])
    await store.save_response(record("r2", owner, prev="r1"), [], [])  # a link without items
    await store.save_response(record("r3", owner, prev="r2", status="in_progress"),
                              [msg("b3", "three", "assistant")], [msg("a3", "third"), msg("a3b", "more")])


async def test_load_chain_in_one_round_trip(make_store: Callable[..., Store], anyio_backend: str) -> None:
    queries: list[str] = []
    store = make_store(query_logger=queries.append)
    await store.open()
    try:
        await _chain(store)
        if isinstance(store, SQLiteStore):
            store._reader.set_trace_callback(queries.append)  # type: ignore[union-attr]
        await pg.logged()
        queries.clear()
        chain = await store.load_chain("r3", "alice")
        await pg.logged()
        assert len(queries) == 1, queries
        assert [c.id for c in chain] == ["r1", "r2", "r3"]
        assert [c.status for c in chain] == ["completed", "completed", "in_progress"]
        assert texts(chain[0].input) == ["first"] and texts(chain[0].output) == ["one"]
        assert chain[1].input == [] and chain[1].output == []
        assert texts(chain[2].input) == ["third", "more"] and texts(chain[2].output) == ["three"]
        assert [c.id for c in await store.load_chain("r1", "alice")] == ["r1"]
    finally:
        await store.close()


async def test_load_chain_unknown_or_foreign(store: Store) -> None:
    await _chain(store)
    for rid, owner in (("r_missing", "alice"), ("r3", "bob")):
        with pytest.raises(NotFound) as e:
            await store.load_chain(rid, owner)
        assert rid in e.value.message and e.value.param == "previous_response_id"
        assert e.value.code == "previous_response_not_found"


async def test_load_chain_broken_or_expired(store: Store) -> None:
    await _chain(store)
    assert await store.delete_response("r2", "alice")
    with pytest.raises(NotFound) as e:
        await store.load_chain("r3", "alice")
    assert "'r2'" in e.value.message and "r3" in e.value.message

    await expired(store, "x1")
    await store.save_response(record("x2", prev="x1"), [], [])
    with pytest.raises(NotFound) as e:
        await store.load_chain("x2", "alice")
    assert "'x1'" in e.value.message


async def test_delete_response(store: Store) -> None:
    await store.save_response(record("resp_d", background=True), [msg("od", "x", "assistant")],
                              [msg("id", "q")])
    await store.append_events("resp_d", [(0, b'{"type":"response.created"}')])
    assert await store.delete_response("resp_d", "bob") is False
    assert await store.delete_response("resp_d", "alice") is True
    assert await store.get_response("resp_d", "alice") is None
    assert await store.load_events("resp_d", -1) == []
    assert await store.find_items("alice", ["od", "id"]) == {}
    assert await store.delete_response("resp_d", "alice") is False


async def test_input_item_pages(store: Store) -> None:
    await store.save_response(record("resp_p"), [], [msg(f"i{n}", f"t{n}") for n in range(1, 6)])

    async def page(**kw: Any) -> tuple[list[str], bool]:
        args = {"after": None, "before": None, "limit": 20, "order": "desc", **kw}
        p = await store.list_input_items("resp_p", "alice", **args)
        assert p is not None
        return [i["id"] for i in p.items], p.has_more

    assert await page(limit=2) == (["i5", "i4"], True)
    assert await page(limit=2, after="i4") == (["i3", "i2"], True)
    assert await page(limit=2, after="i2") == (["i1"], False)
    assert await page(order="asc", after="i2") == (["i3", "i4", "i5"], False)
    assert await page(order="asc", before="i3") == (["i1", "i2"], False)
    assert await page(order="asc", after="i1", before="i4") == (["i2", "i3"], False)
    assert await page(order="desc", before="i3") == (["i5", "i4"], False)
    assert await page(after="nope") == ([], False)
    assert await store.list_input_items("resp_p", "bob", after=None, before=None, limit=5,
                                        order="asc") is None


async def test_find_items(store: Store) -> None:
    await store.save_response(record("f1", created=NOW - 20), [msg("shared", "older", "assistant")],
                              [msg("in1", "q1")])
    await store.save_response(record("f2", created=NOW - 10), [msg("shared", "newer", "assistant")], [])
    await store.save_response(record("f3", owner="bob"), [msg("bobs", "b", "assistant")], [])
    found = await store.find_items("alice", ["shared", "in1", "bobs", "missing"])
    assert set(found) == {"shared", "in1"}
    assert texts([found["shared"]]) == ["newer"]
    assert await store.find_items("alice", []) == {}


async def test_purge_expired(store: Store) -> None:
    await expired(store, "old", background=True)
    await store.append_events("old", [(0, b"{}")])
    await store.save_response(record("live"), [msg("lo", "x", "assistant")], [])
    await store.put_file(FileRecord("file_old", "alice", NOW - 100, "a.txt", "user_data", 1, "text/plain",
                                    expires_at=NOW - 1), b"a")
    await store.put_file(FileRecord("file_new", "alice", NOW, "b.txt", "user_data", 1, "text/plain"), b"b")
    assert await store.purge_expired(int(time.time())) == 2
    assert await store.load_events("old", -1) == []
    assert await store.get_response("live", "alice") is not None
    assert await store.get_file("file_new", "alice") is not None
    assert await store.purge_expired(int(time.time())) == 0


# ---- background runs ------------------------------------------------------------------------------


async def test_events_append_and_load(store: Store) -> None:
    await store.save_response(record("ev", background=True), [])
    await store.append_events("ev", [(0, b'{"a":0}'), (1, b'{"a":1}')])
    await store.append_events("ev", [(1, b'{"dup":1}'), (2, b'{"a":2}')])  # a replayed batch: ignored
    await store.append_events("ev", [])
    rows = await store.load_events("ev", -1)
    assert [(s, bytes(d)) for s, d in rows] == [(0, b'{"a":0}'), (1, b'{"a":1}'), (2, b'{"a":2}')]
    assert [s for s, _ in await store.load_events("ev", 0)] == [1, 2]
    assert await store.load_events("ev", 2) == []


async def test_release(store: Store) -> None:
    now = int(time.time())
    await store.save_response(record("run", status="queued", background=True, lease_owner="A",
                                     lease_until=now + 30), [])
    await store.release_run("run", "B")  # not B's: no effect
    assert await store.orphaned_runs(now, "C") == []
    await store.release_run("run", "A")
    assert [c.id for c in await store.orphaned_runs(now, "C")] == ["run"]  # unowned: anyone may take it


async def test_renew_and_cancel(store: Store) -> None:
    now = int(time.time())
    for rid in ("c1", "c2"):
        await store.save_response(record(rid, status="in_progress", background=True, lease_owner="A",
                                         lease_until=now + 2), [])
    assert await store.request_cancel("c2", "bob") is False
    assert await store.cancel_requested("c2") is False
    assert await store.request_cancel("c2", "alice") is True
    assert await store.cancel_requested("c2") is True
    assert await store.cancel_requested("c1") is False
    assert await store.cancel_requested("unknown") is False
    assert await store.renew_leases("A", now + 100) == ["c2"]
    assert await store.renew_leases("B", now + 100) == []
    # Renewed: not orphaned at now + 50, orphaned after now + 100.
    assert await store.orphaned_runs(now + 50, "C") == []
    assert {c.id for c in await store.orphaned_runs(now + 101, "C")} == {"c1", "c2"}


async def test_orphaned_runs(store: Store) -> None:
    now = int(time.time())
    await store.save_response(record("o_expired", status="in_progress", background=True, lease_owner="A",
                                     lease_until=now - 1, run_request={"input": "x"}), [])
    await store.save_response(record("o_unowned", status="queued", background=True), [])
    await store.save_response(record("o_live", status="in_progress", background=True, lease_owner="B",
                                     lease_until=now + 30), [])
    await store.save_response(record("o_stream", status="in_progress", lease_owner="A",
                                     lease_until=now - 1), [])
    await store.save_response(record("o_done", status="completed", background=True, lease_owner="A",
                                     lease_until=now - 1), [])
    claims = {c.id: c for c in await store.orphaned_runs(now, "C")}
    assert set(claims) == {"o_expired", "o_unowned", "o_stream"}
    c = claims["o_expired"]
    assert (c.owner, c.status, c.background, c.run_request) == ("alice", "in_progress", True, {"input": "x"})
    assert claims["o_unowned"].status == "queued" and claims["o_unowned"].run_request is None
    assert claims["o_stream"].background is False
    assert await store.orphaned_runs(now, "D") == []  # now leased to C
    # take_all (one process owns the database): every unfinished run not held by the caller.
    assert {c.id for c in await store.orphaned_runs(now, "B", take_all=True)} == \
        {"o_expired", "o_unowned", "o_stream"}
    assert {c.id for c in await store.orphaned_runs(now, "C", take_all=True)} == {"o_expired", "o_unowned",
                                                                                 "o_stream", "o_live"}


async def test_orphans_are_claimed_once(make_store: Callable[..., Store], anyio_backend: str) -> None:
    a, b = make_store(), make_store()
    await a.open()
    if isinstance(a, SQLiteStore):
        # One process owns a SQLite database: a second store on the same file is refused,
        # and concurrent claims come from one store.
        with pytest.raises(RuntimeError, match="another Responsa process"):
            await b.open()
        b = a
    else:
        await b.open()
    try:
        now = int(time.time())
        ids = {f"orphan{n}" for n in range(30)}
        for rid in ids:
            await a.save_response(record(rid, status="in_progress", background=True, lease_owner="dead",
                                         lease_until=now - 1), [])
        got = await asyncio.gather(*[s.orphaned_runs(now, name) for s, name in
                                     ((a, "X"), (b, "Y"), (a, "Z"), (b, "W"))])
        claimed = [c.id for claims in got for c in claims]
        assert sorted(claimed) == sorted(ids)  # every one taken, none twice
    finally:
        await a.close()
        if b is not a:
            await b.close()


async def test_notify_reaches_this_process_once(store: Store) -> None:
    seen: list[tuple[str, str]] = []
    store.on_notify(lambda channel, rid: seen.append((channel, rid)))
    await store.notify("events", "resp_n")
    await store.notify("cancel", "resp_n")
    await asyncio.sleep(0.3)  # give a database echo the time to arrive: it must not
    assert seen == [("events", "resp_n"), ("cancel", "resp_n")]


async def _received(seen: asyncio.Queue, within: float = 5) -> tuple[str, str]:
    async with asyncio.timeout(within):
        return await seen.get()


async def test_notify_reaches_other_processes(make_store: Callable[..., Store], anyio_backend: str) -> None:
    a, b = make_store(), make_store()
    if not is_pg(a):
        pytest.skip("optional: a SQLite database belongs to one process")
    await a.open()
    await b.open()
    try:
        seen: asyncio.Queue = asyncio.Queue()
        b.on_notify(lambda channel, rid: seen.put_nowait((channel, rid)))
        await a.notify("cancel", "resp_x")
        assert await _received(seen) == ("cancel", "resp_x")

        # The listening connection is cut (a database restart, a failover): it comes back.
        assert pg.terminate(b.url, "responsa-listen") >= 1  # type: ignore[attr-defined]
        assert await _received_after_retries(a, seen, "resp_y") == ("events", "resp_y")
    finally:
        await a.close()
        await b.close()


async def _received_after_retries(a: Store, seen: asyncio.Queue, rid: str) -> tuple[str, str]:
    """Notify until the other side hears it: notifications sent while it reconnects are lost."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        await a.notify("events", rid)
        try:
            return await _received(seen, within=0.5)
        except TimeoutError:
            continue
    raise AssertionError("the listener did not reconnect")


# ---- files and secrets ----------------------------------------------------------------------------


async def test_files(store: Store) -> None:
    for n, purpose in enumerate(("user_data", "assistants", "user_data")):
        await store.put_file(FileRecord(f"file_{n}", "alice", NOW + n, f"f{n}.txt", purpose, n + 1,
                                        "text/plain"), b"x" * (n + 1))
    await store.put_file(FileRecord("file_gone", "alice", NOW, "g.txt", "user_data", 1, "text/plain",
                                    expires_at=NOW - 1), b"g")
    f = await store.get_file("file_1", "alice")
    assert f is not None and (f.filename, f.purpose, f.bytes, f.mime_type) == \
        ("f1.txt", "assistants", 2, "text/plain")
    assert f.wire()["object"] == "file"
    assert await store.file_content("file_1", "alice") == b"xx"
    assert await store.get_file("file_1", "bob") is None
    assert await store.file_content("file_1", "bob") is None
    assert await store.get_file("file_gone", "alice") is None
    assert await store.file_content("file_gone", "alice") is None

    async def ids(**kw: Any) -> tuple[list[str], bool]:
        args = {"purpose": None, "after": None, "limit": 20, "order": "desc", **kw}
        files, more = await store.list_files("alice", **args)
        return [f.id for f in files], more

    assert await ids(limit=2) == (["file_2", "file_1"], True)
    assert await ids(limit=2, after="file_1") == (["file_0"], False)
    assert await ids(order="asc", after="file_0") == (["file_1", "file_2"], False)
    assert await ids(purpose="user_data") == (["file_2", "file_0"], False)
    assert await ids(after="file_unknown") == ([], False)
    assert await store.list_files("bob", purpose=None, after=None, limit=5, order="asc") == ([], False)
    # Without an owner (the admin key's console): every owner's live files.
    await store.put_file(FileRecord("file_bob", "bob", NOW + 9, "b.txt", "user_data", 1, "text/plain"), b"b")
    assert await ids(limit=2) == (["file_2", "file_1"], True)  # (still alice's alone)
    every, more = await store.list_files(None, purpose=None, after=None, limit=3, order="desc")
    assert ([f.id for f in every], more) == (["file_bob", "file_2", "file_1"], True)
    assert [f.owner for f in every] == ["bob", "alice", "alice"]
    every, more = await store.list_files(None, purpose="user_data", after="file_2", limit=3, order="desc")
    assert ([f.id for f in every], more) == (["file_0"], False)
    assert await store.list_files(None, purpose=None, after="file_unknown", limit=3, order="desc") == ([], False)
    assert await store.delete_file("file_1", "bob") is False
    assert await store.delete_file("file_1", "alice") is True
    assert await store.delete_file("file_1", "alice") is False
    assert await store.get_file("file_1", "alice") is None


async def test_vector_store_owners(store: Store) -> None:
    """Every owner's vector stores, newest first, for the admin key's console."""
    from responsa.store.vector_records import VectorIndex, VectorStoreRecord

    index: VectorIndex = store  # type: ignore[assignment]
    later = NOW + 10_000_000  # after any store another test left in the shared PostgreSQL database
    made = [(f"vs_owners_{n}_{time.time_ns()}", owner) for n, owner in enumerate(("alice", "bob", "alice"))]
    for n, (sid, owner) in enumerate(made):
        await index.create_vector_store(VectorStoreRecord(id=sid, owner=owner, created_at=later + n, name="s",
                                                          metadata={}, last_active_at=later))
    assert await store.vector_store_owners(after=None, limit=2) == (made[::-1][:2], True)
    page, _more = await store.vector_store_owners(after=made[1][0], limit=1)  # (older stores may follow)
    assert page == [made[0]]
    assert await store.vector_store_owners(after="vs_unknown", limit=5) == ([], False)
    assert await store.vector_store_owners(after="vs_\x00", limit=5) == ([], False)


async def test_ids_holding_nul_name_no_row(store: Store) -> None:
    # No stored id holds U+0000 (PostgreSQL text cannot): such a lookup is a miss on both stores,
    # never a database error.
    await store.save_response(record("resp_1"), [msg("msg_out", "hi", "assistant")], [msg("msg_in", "hello")])
    await store.put_file(FileRecord("file_1", "alice", NOW, "f.txt", "user_data", 1, "text/plain"), b"x")
    nul = "resp_1\x00"
    assert await store.get_response(nul, "alice") is None
    assert await store.get_record(nul, "alice") is None
    with pytest.raises(NotFound):
        await store.load_chain(nul, "alice")
    assert await store.delete_response(nul, "alice") is False
    assert await store.request_cancel(nul, "alice") is False
    assert await store.cancel_requested(nul) is False
    assert await store.load_events(nul, -1) == []
    assert await store.list_input_items(nul, "alice", after=None, before=None, limit=5, order="asc") is None
    for cursor in ({"after": "msg_in\x00", "before": None}, {"after": None, "before": "msg_in\x00"}):
        page = await store.list_input_items("resp_1", "alice", limit=5, order="asc", **cursor)
        assert page is not None and (page.items, page.has_more) == ([], False)
    assert await store.find_items("alice", ["msg_in\x00", "msg_in"]) == {"msg_in": msg("msg_in", "hello")}
    assert await store.get_file("file_1\x00", "alice") is None
    assert await store.file_content("file_1\x00", "alice") is None
    assert await store.delete_file("file_1\x00", "alice") is False
    assert await store.list_files("alice", purpose=None, after="file_1\x00", limit=5, order="asc") == ([], False)
    assert await store.get_response("resp_1", "alice") is not None  # nothing was deleted


async def test_postgres_refuses_unstorable_values_as_client_errors(store: Store) -> None:
    if not is_pg(store):
        pytest.skip("optional: SQLite text holds U+0000 (the request checks refuse it for both stores)")
    with pytest.raises(InvalidRequest):
        await store.put_file(FileRecord("file_1", "alice", NOW, "a\x00b.txt", "user_data", 1, "text/plain"), b"x")
    with pytest.raises(InvalidRequest):
        await store.save_response(record("resp_1"), [], [msg("msg_\x00", "hello")])
    assert await store.get_record("resp_1", "alice") is None  # one statement: nothing half-written
    assert await store.ping() is True


def test_rows_are_serialised_to_their_own_size() -> None:
    item = msg("msg_1", "x")
    assert orjson.loads(row_json(item)) == item
    tracemalloc.start()
    try:
        kept = [row_json(item) for _ in range(1000)]
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(kept) == 1000 and held < 1000 * 512  # orjson's own results hold 4 KiB each


async def test_secrets(store: Store) -> None:
    assert await store.add_secret("vault_key_1", b"one") is True
    assert await store.add_secret("vault_key_1", b"other") is False
    assert await store.add_secret("vault_key_2", b"two") is True
    assert await store.add_secret("vaultXkey_3", b"not mine") is True  # `_` is no wildcard
    assert await store.get_secrets("vault_key_") == {"vault_key_1": b"one", "vault_key_2": b"two"}
    assert await store.get_secrets("nothing") == {}


async def test_api_keys(store: Store) -> None:
    assert await store.has_keys() is False and await store.list_keys() == []
    one = KeyRecord(id="key_1", name="ci", owner="o1", hash="h1", created_at=NOW, project="p")
    two = KeyRecord(id="key_2", name="bot", owner="o2", hash="h2", created_at=NOW + 1)
    await store.add_key(one)
    await store.add_key(two)
    assert await store.has_keys() is True
    assert await store.find_key("h1") == one and await store.find_key("nope") is None
    assert await store.rotate_key("key_1", "h1b", NOW + 5) is True
    assert await store.find_key("h1") is None
    rotated = await store.find_key("h1b")
    assert rotated is not None and rotated.owner == "o1" and rotated.rotated_at == NOW + 5
    assert await store.revoke_key("key_2", NOW + 6) is True
    assert await store.revoke_key("key_2", NOW + 7) is False  # not in use any more
    assert await store.rotate_key("key_2", "h2b", NOW + 7) is False
    assert await store.find_key("h2") is None
    listed = await store.list_keys()
    assert [k.id for k in listed] == ["key_1", "key_2"] and listed[1].revoked_at == NOW + 6
    assert await store.set_key_limits("key_1", Limits(requests_per_minute=30, tokens_per_day=900)) is True
    limited = await store.find_key("h1b")
    assert limited is not None and limited.requests_per_minute == 30
    assert limited.limits == Limits(requests_per_minute=30, tokens_per_day=900) and limited.project_limits is None
    await store.set_project_limits("p", Limits(streams=2))
    assert await store.get_project_limits() == {"p": Limits(streams=2)}
    limited = await store.find_key("h1b")
    assert limited is not None and limited.project_limits == Limits(streams=2)
    await store.set_project_limits("p", Limits())
    assert await store.get_project_limits() == {}
    assert await store.set_key_limits("key_2", Limits(requests_per_minute=30)) is False  # revoked
    assert await store.revoke_key("key_1", NOW + 8) is True
    assert await store.has_keys() is False


async def test_key_windows_slots_and_usage(make_store: Callable[..., Store], anyio_backend: str) -> None:
    one, two = make_store(), make_store()  # two replicas count together (SQLite: one process, twice)
    await one.open()
    if is_pg(one):
        await two.open()
    else:
        two = one
    try:
        # Windows of 1000 ms: each count adds one; a window that ended starts again with this request.
        w = [("key:1", 1000), ("project:p", 5000)]
        assert await one.take_windows(w, 100) == [(1, 0, 100), (1, 0, 100)]
        assert await two.take_windows(w, 500) == [(2, 0, 100), (2, 0, 100)]
        await one.add_window_tokens(w, 40)
        await two.add_window_tokens([("key:1", 1000)], 2)
        assert await two.take_windows(w, 1099) == [(3, 42, 100), (3, 40, 100)]
        assert await one.take_windows(w, 1100) == [(1, 0, 1100), (4, 40, 100)]
        # Slots: at most `limit` held at once, across replicas; a slot whose time ran out is free.
        assert await one.take_slot("streams:key:1", "a", 2, 0, 1000) is True
        assert await two.take_slot("streams:key:1", "b", 2, 0, 5000) is True
        assert await one.take_slot("streams:key:1", "c", 2, 10, 1000) is False
        assert await two.take_slot("streams:key:1", "c", 2, 1000, 2000) is True  # "a" ran out at 1000
        await one.renew_slots({"streams:key:1": ["b", "c", "gone"]}, 9000)
        assert await one.take_slot("streams:key:1", "d", 2, 6000, 7000) is False  # b and c renewed to 9000
        await two.release_slot("streams:key:1", "c")
        assert await one.take_slot("streams:key:1", "d", 2, 6000, 7000) is True
        # Usage adds up across writers, per day, key, project and model.
        await one.add_usage([UsageRow("2026-01-02", "key_1", "p", "m", 1, 10, 5, 2, 1, 0)])
        await two.add_usage([UsageRow("2026-01-02", "key_1", "p", "m", 2, 1, 1, 0, 0, 1),
                             UsageRow("2026-01-03", "local", "", "m", 1, 3, 4, 0, 0, 0)])
        assert await one.list_usage(since="2026-01-01", until="2026-01-02") == [
            UsageRow("2026-01-02", "key_1", "p", "m", 3, 11, 6, 2, 1, 1)]
        assert [r.key for r in await two.list_usage(since="2026-01-01", until="2026-01-09")] == ["key_1", "local"]
        assert await two.list_usage(since="2026-01-01", until="2026-01-09", project="") == [
            UsageRow("2026-01-03", "local", "", "m", 1, 3, 4, 0, 0, 0)]
        assert await two.list_usage(since="2026-01-01", until="2026-01-09", key="nobody") == []
    finally:
        await one.close()
        if two is not one:
            await two.close()


async def test_ping(store: Store) -> None:
    assert await store.ping() is True


async def test_outage_gives_503_then_recovers(anyio_backend: str) -> None:
    from responsa.store.postgres import PostgresStore

    url = pg.create_database()
    store = PostgresStore(url, pool_size=3)
    try:
        await store.open()
        await store.save_response(record("before"), [msg("o", "kept", "assistant")], [])
        pg.set_outage(url, down=True)
        try:
            with pytest.raises(ServiceUnavailable) as e:
                await store.get_response("before", "alice")
            assert e.value.status == 503 and "database is unavailable" in e.value.message
            with pytest.raises(ServiceUnavailable):
                await store.save_response(record("during"), [], [])
            assert await store.ping() is False
        finally:
            pg.set_outage(url, down=False)
        assert await store.ping() is True
        got = await store.get_response("before", "alice")
        assert got is not None and texts(got["output"]) == ["kept"]
        await store.save_response(record("after"), [], [])
        assert await store.get_record("after", "alice") is not None
    finally:
        await store.close()
        pg.drop_database(url)


async def test_pool_is_bounded_and_survives_cancelled_calls(pg_url: str, anyio_backend: str) -> None:
    from responsa.store.postgres import PostgresStore

    store = PostgresStore(pg_url, pool_size=3)
    await store.open()
    try:
        await store.save_response(record("pooled"), [msg("o", "x", "assistant")], [])
        got = await asyncio.gather(*(store.get_response("pooled", "alice") for _ in range(60)))
        assert all(g is not None for g in got)
        name = pg_url.rsplit("/", 1)[1]
        used = pg.admin("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = "
                        "'responsa'", name)[0][0]
        assert 1 <= used <= 3
        # Callers cancelled mid-query (a client that went away) leave no broken connection behind.
        tasks = [asyncio.create_task(store.get_response("pooled", "alice")) for _ in range(10)]
        await asyncio.sleep(0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        got = await asyncio.gather(*(store.get_response("pooled", "alice") for _ in range(10)))
        assert all(g is not None and texts(g["output"]) == ["x"] for g in got)
    finally:
        await store.close()


async def test_saves_made_together_are_committed_together(pg_url: str, anyio_backend: str) -> None:
    """Group commit (pgbatch.py): responses saved at the same time share round trips, every one
    is stored once its save returns, a save refused for its own value fails alone, and two saves
    of one response are applied in the order they were made."""
    from responsa.store.postgres import PostgresStore

    if _migrated(pg_url):
        pg.admin_on(pg_url, f"TRUNCATE {TABLES}")
    sent: list[str] = []
    store = PostgresStore(pg_url, pool_size=4, query_logger=sent.append)
    await store.open()
    try:
        await pg.logged()
        sent.clear()
        await asyncio.gather(*(store.save_response(record(f"g{i}"), [msg(f"g{i}o", f"out {i}", "assistant")],
                                                   [msg(f"g{i}i", f"in {i}")]) for i in range(40)))
        await pg.logged()
        saves = [q for q in sent if "INSERT INTO responses" in q]
        assert 1 <= len(saves) < 40, len(saves)  # fewer round trips than responses
        for i in range(40):
            got = await store.get_response(f"g{i}", "alice")
            assert got is not None and texts(got["output"]) == [f"out {i}"]

        # One value PostgreSQL cannot hold spoils its batch: the others are stored all the same.
        results = await asyncio.gather(
            *(store.save_response(record(f"b{i}"), [], [msg(f"b{i}\x00" if i == 2 else f"b{i}i", "q")])
              for i in range(5)), return_exceptions=True)
        assert isinstance(results[2], InvalidRequest)
        assert [r for i, r in enumerate(results) if i != 2] == [None] * 4
        assert await store.get_record("b2", "alice") is None  # nothing half-written
        assert all([await store.get_record(f"b{i}", "alice") is not None for i in (0, 1, 3, 4)])

        # Two saves of one response at once: the later one lands last.
        first, last = record("twice", status="in_progress"), record("twice", status="completed")
        await asyncio.gather(store.save_response(first, [msg("t1", "partial", "assistant")], []),
                             store.save_response(last, [msg("t1", "final", "assistant")], []))
        got = await store.get_response("twice", "alice")
        assert got is not None and got["status"] == "completed" and texts(got["output"]) == ["final"]
    finally:
        await store.close()


async def test_cached_chains_read_one_link_and_follow_deletes_of_another_replica(pg_url: str,
                                                                                  anyio_backend: str) -> None:
    """A replica reuses the chains it read (turn N+1: turn N's own row and items, nothing
    recursive), yet never continues a chain a link of which another replica deleted."""
    from responsa.store.postgres import PostgresStore

    if _migrated(pg_url):
        pg.admin_on(pg_url, f"TRUNCATE {TABLES}")
    queries: list[str] = []
    a = PostgresStore(pg_url, pool_size=2, query_logger=queries.append)
    b = PostgresStore(pg_url, pool_size=2)
    await a.open()
    await b.open()
    try:
        await a.save_response(record("c1"), [msg("c1o", "one", "assistant")], [msg("c1i", "first")])
        await a.save_response(record("c2", prev="c1"), [msg("c2o", "two", "assistant")], [msg("c2i", "second")])
        assert [c.id for c in await a.load_chain("c2", "alice")] == ["c1", "c2"]
        await a.save_response(record("c3", prev="c2"), [msg("c3o", "three", "assistant")], [msg("c3i", "third")])
        for _ in range(2):  # turn 3 read once, then from the cache: one statement each, never recursive
            await pg.logged()
            queries.clear()
            chain = await a.load_chain("c3", "alice")
            await pg.logged()
            assert len(queries) == 1 and "RECURSIVE" not in queries[0], queries
            assert [c.id for c in chain] == ["c1", "c2", "c3"]
            assert [texts(c.input) + texts(c.output) for c in chain] == \
                [["first", "one"], ["second", "two"], ["third", "three"]]
        with pytest.raises(NotFound):
            await a.load_chain("c3", "bob")
        await a.save_response(record("c4", prev="c3"), [], [])
        assert await b.delete_response("c1", "alice")
        for rid in ("c4", "c2", "c3"):  # c4 over the cached c3 (checked), c2 cached itself, c3 read whole
            with pytest.raises(NotFound) as e:
                await a.load_chain(rid, "alice")
            assert "'c1'" in e.value.message
    finally:
        await a.close()
        await b.close()


async def test_an_ephemeral_response_is_read_by_id_only_and_its_expiry_follows_saves(store: Store) -> None:
    """A background response with store=false: retrievable by id, never a chain's link, an item
    source or listed; a later save may cut its expiry (to the window after it ends)."""
    base = record("resp_eph", background=True, status="in_progress")
    eph = ResponseRecord(**{**base.__dict__, "ephemeral": True})
    await store.save_response(eph, [], [])
    eph.status = "completed"
    await store.save_response(eph, [msg("out_eph", "answer", "assistant")], create=False)
    got = await store.get_record("resp_eph", "alice")
    assert got is not None and got.ephemeral and got.status == "completed"
    assert texts((await store.get_response("resp_eph", "alice") or {})["output"]) == ["answer"]
    with pytest.raises(NotFound):
        await store.load_chain("resp_eph", "alice")
    assert await store.find_items("alice", ["out_eph"]) == {}
    assert await store.list_input_items("resp_eph", "alice", after=None, before=None, limit=20, order="asc") is None
    plain = record("resp_plain")
    await store.save_response(plain, [msg("out_plain", "kept", "assistant")], [])
    assert not (await store.get_record("resp_plain", "alice") or eph).ephemeral
    assert set(await store.find_items("alice", ["out_plain"])) == {"out_plain"}
    # The end cuts the expiry; an expired response is invisible at once and purged.
    eph.expires_at = int(time.time()) - 1
    await store.save_response(eph, [msg("out_eph", "answer", "assistant")], create=False)
    assert await store.get_response("resp_eph", "alice") is None
    assert await store.purge_expired(int(time.time())) >= 1
    assert await store.get_record("resp_plain", "alice") is not None


# ---- listing responses (GET /responses, the console) ---------------------------------------------


async def test_list_responses(store: Store) -> None:
    for n in range(5):
        r = record(f"resp_{n}", created=NOW + n, status="completed" if n % 2 else "failed")
        r.body["model"] = "m-odd" if n % 2 else "m-even"
        r.body["metadata"] = {"n": str(n), "team": "red" if n < 3 else "blue"}
        await store.save_response(r, [msg(f"o{n}", f"answer <{n}> 50%_done", "assistant")],
                                  [msg(f"i{n}", f'question "{n}"')])
    await store.save_response(record("resp_bob", "bob", created=NOW + 9), [msg("ob", "answer bob", "assistant")])
    await expired(store, "resp_old")
    eph = record("resp_eph", created=NOW + 8)
    eph.ephemeral = True
    await store.save_response(eph, [])

    async def ids(owner: str | None = "alice", **kw: Any) -> tuple[list[str], bool]:
        page = await store.list_responses(ResponseQuery(owner=owner, **kw))
        return [r.response["id"] for r in page.responses], page.has_more

    assert await ids() == (["resp_4", "resp_3", "resp_2", "resp_1", "resp_0"], False)
    assert await ids(limit=2) == (["resp_4", "resp_3"], True)
    assert await ids(limit=2, after="resp_3") == (["resp_2", "resp_1"], True)
    assert await ids(limit=2, before="resp_1") == (["resp_3", "resp_2"], True)  # the page just before
    assert await ids(limit=2, before="resp_3") == (["resp_4"], False)
    assert await ids(after="resp_4", before="resp_1") == (["resp_3", "resp_2"], False)
    assert await ids(order="asc", limit=3) == (["resp_0", "resp_1", "resp_2"], True)
    assert await ids(order="asc", after="resp_2") == (["resp_3", "resp_4"], False)
    assert await ids(order="asc", before="resp_2", limit=1) == (["resp_1"], True)
    assert await ids(status="failed") == (["resp_4", "resp_2", "resp_0"], False)
    assert await ids(model="m-odd") == (["resp_3", "resp_1"], False)
    assert await ids(metadata=(("team", "red"),)) == (["resp_2", "resp_1", "resp_0"], False)
    assert await ids(metadata=(("team", "red"), ("n", "1"))) == (["resp_1"], False)
    assert await ids(metadata=(("status", "completed"),)) == ([], False)  # a body field is not metadata
    assert await ids(created_after=NOW + 1, created_before=NOW + 4) == (["resp_3", "resp_2"], False)
    assert await ids(text="ANSWER <3>") == (["resp_3"], False)  # output text, any case
    assert await ids(text='question "2"') == (["resp_2"], False)  # input text, quotes as written
    assert await ids(text="50%_done", limit=1) == (["resp_4"], True)  # wildcards taken literally
    assert await ids(text="0%x") == ([], False)
    assert await ids(text="answer bob") == ([], False)  # another owner's
    assert await ids(after="resp_bob") == ([], False)  # another owner's cursor
    assert await ids(after="resp_unknown") == ([], False)
    assert await ids("bob") == (["resp_bob"], False)
    assert await ids(None, limit=2) == (["resp_bob", "resp_4"], True)  # the admin key: every owner's
    assert await ids(None, after="resp_bob", limit=1) == (["resp_4"], True)
    page = await store.list_responses(ResponseQuery(owner=None, limit=1))
    assert page.responses[0].owner == "bob"
    first = (await store.list_responses(ResponseQuery(owner="alice", limit=1))).responses[0]
    assert first.owner == "alice" and first.response == await store.get_response("resp_4", "alice")
    assert await store.response_owner("resp_3") == "alice"
    assert await store.response_owner("resp_bob") == "bob"
    assert await store.response_owner("resp_old") is None
    assert await store.response_owner("resp_eph") is None
    assert await store.response_owner("resp_\x00") is None
    assert await ids(after="resp_\x00") == ([], False)
    await store.save_response(record("resp_next", created=NOW + 20, prev="resp_2"), [])
    await store.save_response(record("resp_fork", created=NOW + 21, prev="resp_2"), [])
    assert await ids(previous_response_id="resp_2") == (["resp_fork", "resp_next"], False)
    assert await ids("bob", previous_response_id="resp_2") == ([], False)


async def test_list_responses_beside_bodies_holding_nul_escapes(store: Store) -> None:
    # A stored body may hold the JSON escape of U+0000 (PostgreSQL's JSON refuses it anywhere in a
    # document); the escape of a backslash followed by "u0000" too. Filters on the body still work.
    r = record("resp_nul", created=NOW)
    r.body.update({"model": "m", "instructions": "a\x00b \\u0000 c", "metadata": {"k": "v"}})
    await store.save_response(r, [msg("o_nul", "nul \x00 inside", "assistant")])
    page = await store.list_responses(ResponseQuery(owner="alice", model="m", metadata=(("k", "v"),)))
    assert [x.response["id"] for x in page.responses] == ["resp_nul"]
    assert page.responses[0].response["instructions"] == "a\x00b \\u0000 c"
    page = await store.list_responses(ResponseQuery(owner="alice", text="nul"))
    assert [x.response["id"] for x in page.responses] == ["resp_nul"]


async def test_text_search_looks_through_a_bounded_window(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from responsa.store import listing

    monkeypatch.setattr(listing, "SEARCH_WINDOW", 3)
    for n in range(8):
        await store.save_response(record(f"resp_{n}", created=NOW + n),
                                  [msg(f"o{n}", "needle" if n in (6, 1) else "hay", "assistant")])

    async def search(**kw: Any) -> tuple[list[str], bool, str | None]:
        page = await store.list_responses(ResponseQuery(owner="alice", text="needle", **kw))
        return [r.response["id"] for r in page.responses], page.has_more, page.resume

    # Newest first, three at a time: 7 6 5 | 4 3 2 | 1 0
    assert await search() == (["resp_6"], True, "resp_5")
    assert await search(after="resp_5") == ([], True, "resp_2")
    assert await search(after="resp_2") == (["resp_1"], False, None)
    assert await search(limit=1) == (["resp_6"], True, "resp_5")
    assert await search(order="asc", limit=5) == (["resp_1"], True, "resp_2")
    assert await search(before="resp_0", limit=5) == (["resp_1"], True, "resp_3")  # backwards from the oldest
    assert await search(before="resp_3") == (["resp_6"], True, "resp_6")  # resp_7 is still to look at
    assert await search(before="resp_6") == ([], False, None)
