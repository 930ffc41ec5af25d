"""file_search: retrieval quality on a real corpus, ingestion throughput and query latency at scale.

Quality: the corpus is the documentation the Python interpreter installs with itself: for each
pure-Python standard-library module, its docstring and those of its top-level functions and
classes (read with `ast`, nothing imported), one file per module. A fixed set of questions,
each answered by one known module, is asked with hybrid search, full-text only
(`embedding_weight: 0`) and dense only (`text_weight: 0`); recall@5 and MRR count the answer's
file among the first five distinct files. Vectors come from the embedded all-MiniLM-L6-v2
(or `--embeddings-base-url URL --embeddings-model NAME`).

Scale: the standard library's source files, cut in 100-token chunks, until a store holds about
10k and 100k chunks. Vectors come from an in-process engine that answers at once (hashed
words, 384 dimensions), so the numbers are the server's own pipeline: extraction, chunking,
storage, the full-text index, and a query's two halves. "Pages" are 3,000 characters of text.

    python benchmarks/file_search.py [--scale 10000,100000] [--database-url postgresql://...]
    python benchmarks/file_search.py --sqlite-vec [--scale 10000,100000]   # the dense half: numpy or sqlite-vec
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness import KEY_A, ServerProcess  # noqa: E402
from openai import OpenAI  # noqa: E402
from test_vector_stores import Embeddings  # noqa: E402

PAGE = 3000
STDLIB = Path(sysconfig.get_paths()["stdlib"])
TOKEN = re.compile(r"\w+|[^\w\s]")

# (question, the module whose documentation answers it)
QUESTIONS = [
    ("How do I compute a SHA-256 digest of some bytes?", "hashlib"),
    ("parse options and arguments given on the command line", "argparse"),
    ("read and write spreadsheet-like comma separated files", "csv"),
    ("turn Python objects into a byte stream and back again", "pickle"),
    ("pattern matching with regular expressions", "re"),
    ("encode data as JSON text and decode it", "json"),
    ("make a scratch file that is deleted automatically", "tempfile"),
    ("copy or remove a whole directory tree", "shutil"),
    ("add days to a date and compute time differences", "datetime"),
    ("pick a pseudo-random element from a list", "random"),
    ("start a child process and read its output", "subprocess"),
    ("create and extract ZIP archives", "zipfile"),
    ("compress a file with gzip", "gzip"),
    ("a priority queue implemented as a binary heap", "heapq"),
    ("insert into a sorted list keeping it sorted", "bisect"),
    ("send an email through an SMTP server", "smtplib"),
    ("split a URL into scheme, host and path", "urllib.parse"),
    ("read and write sound files in the WAV format", "wave"),
    ("fractions and rational numbers", "fractions"),
    ("mean, median and standard deviation of data", "statistics"),
    ("write log messages with levels and handlers", "logging"),
    ("write unit tests with test cases and assertions", "unittest"),
    ("run code in several threads with locks", "threading"),
    ("read settings from an INI configuration file", "configparser"),
    ("object-oriented filesystem paths", "pathlib"),
    ("shell-style wildcard matching of file names", "fnmatch"),
    ("show the differences between two texts like diff", "difflib"),
    ("base64 encoding of binary data", "base64"),
    ("generate a universally unique identifier", "uuid"),
    ("print nested data structures readably", "pprint"),
    ("wrap a long paragraph of text to a width", "textwrap"),
    ("shallow and deep copies of objects", "copy"),
    ("validate and manipulate IPv4 and IPv6 addresses", "ipaddress"),
    ("time how long a small snippet of code takes", "timeit"),
    ("a dictionary persisted to disk", "shelve"),
    ("print a calendar for a month or a year", "calendar"),
    ("format and parse email messages", "email"),
    ("an HTTP client to fetch web pages", "http.client"),
    ("walk the abstract syntax tree of Python source", "ast"),
    ("named tuples, ordered dicts and counters", "collections"),
    ("higher-order functions like partial and caching results", "functools"),
    ("check whether two directories hold the same files", "filecmp"),
    ("queue for passing work between threads", "queue"),
    ("read and write tar archives", "tarfile"),
    ("secure tokens for passwords and authentication", "secrets"),
    ("string formatting templates and constants like ascii letters", "string"),
    ("dataclasses with automatically generated __init__", "dataclasses"),
    ("enumerations with symbolic names", "enum"),
    ("inspect live objects, get the source and signature of a function", "inspect"),
    ("debugger for Python programs with breakpoints", "pdb"),
]


def module_docs(limit: int = 4000) -> dict[str, str]:
    """module name -> its docstring and its top-level definitions' docstrings (at most `limit` chars)."""
    out: dict[str, str] = {}
    for path in sorted(STDLIB.rglob("*.py")):
        rel = path.relative_to(STDLIB)
        skipped = ("test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo")
        if any(p in skipped or (p.startswith("_") and p != "__init__.py") for p in rel.parts):
            continue
        name = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        parts = [ast.get_docstring(tree) or ""]
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                    and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if doc:
                    parts.append(f"{node.name}: {doc}")
        text = f"Module {name}\n\n" + "\n\n".join(p for p in parts if p)
        if len(text) > 200:
            out[name] = text[:limit]
    return out


def poll_store(client: OpenAI, store_id: str, timeout: float = 7200) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        counts = client.vector_stores.retrieve(store_id).file_counts
        if counts.in_progress == 0:
            if counts.failed:
                print(f"  ({counts.failed} of {counts.total} files failed)")
            return
        time.sleep(0.2)
    raise RuntimeError("ingestion did not finish")


def attach_all(client: OpenAI, store_id: str, files: list[tuple[str, bytes]], chunking: dict | None) -> float:
    """Upload, attach in batches of 500 and wait; returns the seconds from the first attach to the last file done."""
    ids = [client.files.create(file=(name, data), purpose="assistants").id for name, data in files]
    start = time.perf_counter()
    for i in range(0, len(ids), 500):
        extra = {"chunking_strategy": chunking} if chunking else {}
        client.vector_stores.file_batches.create(vector_store_id=store_id, file_ids=ids[i:i + 500], **extra)
    poll_store(client, store_id)
    return time.perf_counter() - start


def quality(server: ServerProcess) -> None:
    client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0, timeout=600)
    docs = module_docs()
    missing = [m for _, m in QUESTIONS if m not in docs]
    assert not missing, f"modules without documentation here: {missing}"
    store = client.vector_stores.create(name="stdlib-docs")
    chars = sum(len(t) for t in docs.values())
    seconds = attach_all(client, store.id, [(f"{m}.txt", t.encode()) for m, t in docs.items()], None)
    chunks = sum(1 for _ in _chunks(client, store.id))
    print(f"quality corpus: {len(docs)} modules, {chars / 1e6:.2f} M chars ({chars / PAGE:.0f} pages), "
          f"{chunks} chunks; ingested in {seconds:.1f} s: {chars / PAGE / seconds:.1f} pages/s, "
          f"{chunks / seconds:.1f} chunks/s (embedding included)")
    modes = {"hybrid": None, "full-text only": {"embedding_weight": 0, "text_weight": 1},
             "dense only": {"embedding_weight": 1, "text_weight": 0}}
    print(f"{'mode':<16}{'recall@5':>10}{'MRR':>8}{'p50 ms':>9}")
    for mode, weights in modes.items():
        hits, rr, times = 0, 0.0, []
        for question, module in QUESTIONS:
            options = {"hybrid_search": weights} if weights else {}
            start = time.perf_counter()
            results = client.vector_stores.search(store.id, query=question, max_num_results=20,
                                                  ranking_options=options)  # type: ignore[arg-type]
            times.append(time.perf_counter() - start)
            files = list(dict.fromkeys(r.filename for r in results))
            target = f"{module}.txt"
            if target in files[:5]:
                hits += 1
            if target in files:
                rr += 1 / (files.index(target) + 1)
        print(f"{mode:<16}{hits / len(QUESTIONS):>10.3f}{rr / len(QUESTIONS):>8.3f}"
              f"{statistics.median(times) * 1000:>9.1f}")


def _chunks(client: OpenAI, store_id: str):
    after = None
    while True:
        page = client.vector_stores.files.list(vector_store_id=store_id, limit=100, after=after)  # type: ignore
        for f in page.data:
            yield from client.vector_stores.files.content(f.id, vector_store_id=store_id)
        if not page.has_more:
            return
        after = page.data[-1].id


def scale(server: ServerProcess, target: int) -> None:
    client = OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0, timeout=600)
    files, tokens, chars, copy = [], 0, 0, 0
    while tokens < target * 100:
        for path in sorted(STDLIB.rglob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            n = len(TOKEN.findall(text))
            if n < 50:
                continue
            files.append((f"{copy}-{path.relative_to(STDLIB)}".replace(os.sep, "_"), text.encode()))
            tokens += n
            chars += len(text)
            if tokens >= target * 100:
                break
        copy += 1
    store = client.vector_stores.create(name=f"scale-{target}")
    seconds = attach_all(client, store.id, files, {"type": "static", "static": {
        "max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0}})
    print(f"{target} chunks target: {len(files)} files, {chars / 1e6:.1f} M chars ({chars / PAGE:.0f} pages), "
          f"~{tokens // 100} chunks; ingested in {seconds:.1f} s: {chars / PAGE / seconds:.0f} pages/s, "
          f"{tokens / 100 / seconds:.0f} chunks/s")
    times = []
    for n, (question, _) in enumerate(QUESTIONS * 2):
        start = time.perf_counter()
        client.vector_stores.search(store.id, query=question)
        elapsed = time.perf_counter() - start
        if n == 0:
            print(f"  first query (reads the store's vectors): {elapsed * 1000:.0f} ms")
        else:
            times.append(elapsed)
    times.sort()
    print(f"  query latency over {len(times)} queries: p50 {statistics.median(times) * 1000:.1f} ms, "
          f"p95 {times[int(len(times) * 0.95)] * 1000:.1f} ms")
    for mode, weights in (("full-text only", {"embedding_weight": 0, "text_weight": 1}),
                          ("dense only", {"embedding_weight": 1, "text_weight": 0})):
        times = []
        for question, _ in QUESTIONS:
            start = time.perf_counter()
            client.vector_stores.search(store.id, query=question,
                                        ranking_options={"hybrid_search": weights})  # type: ignore[arg-type]
            times.append(time.perf_counter() - start)
        print(f"  {mode}: p50 {statistics.median(times) * 1000:.1f} ms")


def dense_engines(target: int, tmp: Path, queries: int = 100) -> None:
    """The dense half alone: the server's numpy scan (vectors/matrices.py, search.py) against
    sqlite-vec's vec0 exact KNN, on the same `target` random 384-dimension unit vectors.

    The numpy side is the server's own code over a SQLiteStore (a store's version looked up, its
    cached matrix, one product, the best 50); the vec0 side is one query of a vec0 table
    (`vector_store_id` partition key, cosine distance, k = 50) in its own database file, over the
    same 100 queries, one side after the other (run it twice: the machine is noisy). Needs
    `pip install sqlite-vec` and a SQLite that loads extensions: the stdlib's when Python was
    built with them, else `pip install apsw`.
    """
    import asyncio
    import uuid

    import numpy as np
    import sqlite_vec

    from responsa.store.sqlite import SQLiteStore
    from responsa.store.vector_records import VectorFileRecord, VectorStoreRecord
    from responsa.vectors.search import CANDIDATES, Searcher

    rng = np.random.default_rng(7)
    dims, per_file = 384, 100
    vectors = rng.standard_normal((target, dims), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    asks = rng.standard_normal((queries + 1, dims), dtype=np.float32)
    asks /= np.linalg.norm(asks, axis=1, keepdims=True)

    async def numpy_side() -> tuple[list[float], float, list[list[int]], int]:
        store = SQLiteStore(str(tmp / f"numpy-{target}.db"))
        await store.open()
        sid, now = f"vs_{uuid.uuid4().hex}", int(time.time())
        await store.create_vector_store(VectorStoreRecord(id=sid, owner="o", created_at=now, name="b", metadata={},
                                                          last_active_at=now))
        fids = [f"file-{n}" for n in range(0, target, per_file)]
        await store.attach_vector_files([VectorFileRecord(
            vector_store_id=sid, file_id=f, owner="o", created_at=now, filename=f, status="in_progress",
            attributes={}, chunking={}) for f in fids])
        await store.claim_vector_files("bench", now, now + 3600, len(fids))
        for n, f in enumerate(fids):
            rows = vectors[n * per_file:(n + 1) * per_file]
            await store.finish_vector_file(sid, f, "bench", status="completed", last_error=None, usage_bytes=1,
                                           chunks=[(f"chunk {n} {i}", v.tobytes()) for i, v in enumerate(rows)])
        searcher = Searcher(store, None)
        start = time.perf_counter()
        await searcher._dense([sid], asks[0], None)
        first = time.perf_counter() - start
        times, found = [], []
        for q in asks[1:]:
            start = time.perf_counter()
            found.append(await searcher._dense([sid], q, None))
            times.append(time.perf_counter() - start)
            await asyncio.sleep(0)
        kept = searcher.matrices.nbytes
        await store.close()
        return times, first, found, kept

    try:
        import sqlite3
        conn: Any = sqlite3.connect(tmp / f"vec-{target}.db", isolation_level=None)
        conn.enable_load_extension(True)
    except AttributeError:  # this Python's sqlite3 cannot load extensions
        import apsw
        conn = apsw.Connection(str(tmp / f"vec-{target}.db"))
        conn.enable_load_extension(True)
    conn.load_extension(sqlite_vec.loadable_path())
    conn.execute("CREATE VIRTUAL TABLE vec_chunks USING vec0(vector_store_id text partition key, "
                 f"embedding float[{dims}] distance_metric=cosine)")
    conn.execute("BEGIN")
    for first in range(0, target, 10000):
        conn.executemany("INSERT INTO vec_chunks (rowid, vector_store_id, embedding) VALUES (?, 'vs', ?)",
                         [(first + n + 1, v.tobytes()) for n, v in enumerate(vectors[first:first + 10000])])
    conn.execute("COMMIT")

    np_times, np_first, np_found, kept = asyncio.run(numpy_side())
    vec_times, agree = [], 0
    for n, q in enumerate(asks[1:]):
        start = time.perf_counter()
        ids = [r[0] for r in conn.execute("SELECT rowid FROM vec_chunks WHERE embedding MATCH ? AND k = ? "
                                          "AND vector_store_id = 'vs' ORDER BY distance", (q.tobytes(), CANDIDATES))]
        vec_times.append(time.perf_counter() - start)
        agree += len(set(ids) & set(np_found[n]))  # both number the chunks 1, 2, ... in the same order
    conn.close()
    size = os.path.getsize(tmp / f"vec-{target}.db")
    for name, times in (("numpy scan", np_times), ("sqlite-vec", vec_times)):
        times.sort()
        print(f"  dense half, {name:<10} at {target} chunks: p50 {statistics.median(times) * 1000:.2f} ms, "
              f"p95 {times[int(len(times) * 0.95)] * 1000:.2f} ms")
    print(f"  numpy: first query (reads the vectors) {np_first * 1000:.0f} ms, {kept / 1e6:.0f} MB kept; "
          f"sqlite-vec: {size / 1e6:.0f} MB file, nothing kept; same top {CANDIDATES}: "
          f"{agree / (CANDIDATES * queries):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="10000,100000", help="chunk counts for the scale runs ('' for none)")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--embeddings-base-url", default=None)
    parser.add_argument("--embeddings-model", default=None)
    parser.add_argument("--sqlite-vec", action="store_true",
                        help="only compare the dense half, numpy scan against sqlite-vec, at each --scale size")
    args = parser.parse_args()
    if args.sqlite_vec:
        with tempfile.TemporaryDirectory() as tmp:
            for size in (int(s) for s in args.scale.split(",") if s):
                dense_engines(size, Path(tmp))
        return
    db = ["--database-url", args.database_url] if args.database_url else []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_quality:
            engine = []
            if args.embeddings_base_url:
                engine = ["--embeddings-base-url", args.embeddings_base_url,
                          "--embeddings-model", args.embeddings_model or "default"]
            server = ServerProcess(Path(tmp) / "quality", "--api-key", KEY_A, "--access-log", "false", *db,
                                   *engine).start()
            try:
                quality(server)
            finally:
                server.stop()
        sizes = [int(s) for s in args.scale.split(",") if s]
        if sizes:
            embedder = Embeddings(dim=384).start()
            server = ServerProcess(Path(tmp) / "scale", "--api-key", KEY_A, "--access-log", "false", *db,
                                   "--embeddings-base-url", embedder.url + "/v1", "--embeddings-model", "hashed",
                                   ).start()
            try:
                for size in sizes:
                    scale(server, size)
            finally:
                server.stop()
                embedder.stop()


if __name__ == "__main__":
    main()
