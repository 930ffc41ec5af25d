"""Stores' dense vectors held in this process for search, up to a number of bytes.

A store's vectors are read once into one float32 matrix (with its chunk ids and, per chunk, the
index of its file id) and kept until the store changes (its version moves). What is kept is
bounded by `--vector-cache-size`: the store searched least recently goes first; a store larger
than the whole bound is read for its query and not kept. Queries that want the same store at
once share one read. A store that no longer exists (deleted,
or purged once expired) has no vectors.
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..store.vector_records import VectorIndex


@dataclass
class Matrix:
    version: int
    ids: np.ndarray  # int64 chunk ids
    files: np.ndarray  # int32: each chunk's index in `file_ids`
    file_ids: list[str]
    vectors: np.ndarray  # float32, one unit-length row per chunk

    @property
    def nbytes(self) -> int:
        return (self.ids.nbytes + self.files.nbytes + self.vectors.nbytes
                + sum(sys.getsizeof(f) + 8 for f in self.file_ids))

    def allowed(self, file_ids: list[str]) -> np.ndarray:
        """The rows of chunks of these files."""
        wanted = set(file_ids)
        codes = [n for n, f in enumerate(self.file_ids) if f in wanted]
        return np.isin(self.files, np.array(codes, dtype=np.int32))


class Matrices:
    def __init__(self, index: VectorIndex, max_bytes: int) -> None:
        self.index = index
        self.max_bytes = max_bytes
        self._kept: OrderedDict[str, Matrix] = OrderedDict()  # least recently used first
        self.nbytes = 0
        self.loads = 0  # stores read from the database (for tests and metrics)
        self._reading: dict[tuple[str, int, int], asyncio.Future[Matrix]] = {}

    def __contains__(self, store_id: str) -> bool:
        return store_id in self._kept

    async def get(self, store_ids: list[str], dims: int) -> list[Matrix]:
        """The current vectors (of `dims` dimensions) of these stores, those that exist."""
        versions = await self.index.vector_store_versions(store_ids)
        out = []
        for store_id in store_ids:
            version = versions.get(store_id)
            if version is None:
                self.forget(store_id)
                continue
            kept = self._kept.get(store_id)
            if kept is not None and kept.version == version and kept.vectors.shape[1] == dims:
                self._kept.move_to_end(store_id)
            else:
                kept = await self._read(store_id, version, dims)
            out.append(kept)
        return out

    async def _read(self, store_id: str, version: int, dims: int) -> Matrix:
        """A store's vectors read from the database, once however many queries want them at the
        same time (each read of a large store would hold its own copy)."""
        key = (store_id, version, dims)
        task = self._reading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(store_id, dims))
            self._reading[key] = task
            task.add_done_callback(functools.partial(self._read_done, key))
        return await asyncio.shield(task)

    def _read_done(self, key: tuple[str, int, int], task: asyncio.Future[Matrix]) -> None:
        self._reading.pop(key, None)
        if not task.cancelled() and task.exception() is None:
            self._keep(key[0], task.result())

    async def _load(self, store_id: str, dims: int) -> Matrix:
        got = await self.index.embeddings(store_id)
        self.loads += 1
        size = dims * 4
        # Vectors of another embedder (the configuration changed) are skipped.
        keep = [i for i, v in enumerate(got.vectors) if len(v) == size]
        if len(keep) != len(got.vectors):
            got.ids = [got.ids[i] for i in keep]
            got.file_ids = [got.file_ids[i] for i in keep]
            got.vectors = [got.vectors[i] for i in keep]
        vectors = (np.frombuffer(b"".join(got.vectors), dtype=np.float32).reshape(len(got.ids), dims)
                   if got.ids else np.zeros((0, dims), np.float32))
        codes: dict[str, int] = {}
        files = np.fromiter((codes.setdefault(f, len(codes)) for f in got.file_ids), dtype=np.int32,
                            count=len(got.file_ids))
        return Matrix(got.version, np.array(got.ids, dtype=np.int64), files, list(codes), vectors)

    def _keep(self, store_id: str, matrix: Matrix) -> None:
        self.forget(store_id)
        size = matrix.nbytes
        if size > self.max_bytes:
            return  # larger than the whole cache: used for this query only
        while self._kept and self.nbytes + size > self.max_bytes:
            self.forget(next(iter(self._kept)))
        self._kept[store_id] = matrix
        self.nbytes += size

    def forget(self, store_id: str) -> None:
        dropped = self._kept.pop(store_id, None)
        if dropped is not None:
            self.nbytes -= dropped.nbytes
