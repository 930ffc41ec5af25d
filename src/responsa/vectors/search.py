"""Hybrid search over vector stores: the store's full-text index and dense vectors, fused by rank.

Each query asks both halves for their best `CANDIDATES` chunks among the files that pass the
`filters` (comparison and compound filters on file attributes), then reciprocal rank fusion
weighs them (`ranking_options.hybrid_search`: embedding_weight and text_weight, 1 and 1 by
default). A result's `score` is its fused score over the most a chunk can get (first in every
list), so it lies in 0..1 and `score_threshold` applies to it.

Dense vectors are compared in this process: a store's matrix is read once and kept until the
store's version changes (a file added or removed), so a query costs one matrix product; what is
kept is bounded in bytes, least recently searched first out (matrices.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..store.vector_records import VectorFileRecord, VectorIndex
from .embed import Embedder
from .filters import Hit, matches, terms
from .matrices import Matrices

CANDIDATES = 50  # chunks each half proposes per query
RRF_K = 60
CACHE_BYTES = 512 * 1024**2  # the --vector-cache-size default


# ---- search --------------------------------------------------------------------------------

class Searcher:
    def __init__(self, index: VectorIndex, embedder: Embedder | None, *, cache_bytes: int = CACHE_BYTES) -> None:
        self.index = index
        self.embedder = embedder
        self.matrices = Matrices(index, cache_bytes)

    async def search(self, owner: str, store_ids: Sequence[str], queries: Sequence[str], *, max_results: int,
                     filters: dict | None = None, ranking: dict | None = None, mode: str = "hybrid") -> list[Hit]:
        ranking = ranking or {}
        queries = [q for q in queries if q.strip()]
        if not queries:
            return []
        files: dict[tuple[str, str], VectorFileRecord] | None = None
        allowed = None
        if filters is not None:  # the files that pass, before either half ranks
            files = {(f.vector_store_id, f.file_id): f for f in await self.index.searchable_files(store_ids, owner)
                     if matches(filters, f.attributes)}
            if not files:
                return []
            allowed = sorted({fid for _, fid in files})
        weights = ranking.get("hybrid_search") or {}
        text_weight = float(weights.get("text_weight", 1.0)) if mode != "dense" else 0.0
        dense_weight = float(weights.get("embedding_weight", 1.0)) if mode != "text" else 0.0
        if self.embedder is None:
            dense_weight = 0.0
        fused: dict[int, float] = {}
        vectors = await self.embedder.embed(list(queries)) if dense_weight and self.embedder else None
        for n, query in enumerate(queries):
            if text_weight:
                ranked = await self.index.text_search(store_ids, terms(query), allowed, CANDIDATES)
                for rank, chunk_id in enumerate(ranked):
                    fused[chunk_id] = fused.get(chunk_id, 0.0) + text_weight / (RRF_K + rank + 1)
            if vectors is not None:
                for rank, chunk_id in enumerate(await self._dense(store_ids, vectors[n], allowed)):
                    fused[chunk_id] = fused.get(chunk_id, 0.0) + dense_weight / (RRF_K + rank + 1)
        best = (text_weight + dense_weight) * len(queries) / (RRF_K + 1)
        threshold = float(ranking.get("score_threshold") or 0.0)
        ranked_all = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
        top = [(cid, s / best) for cid, s in ranked_all if best and s / best >= threshold]
        rows = {r.id: r for r in await self.index.chunks([cid for cid, _ in top[:max_results * 2 + 10]])}
        if files is None:  # the files of the best chunks, completed ones only (not one still being ingested)
            wanted = sorted({r.file_id for r in rows.values()})
            files = {(f.vector_store_id, f.file_id): f
                     for f in await self.index.searchable_files(store_ids, owner, wanted)} if wanted else {}
        hits = []
        for cid, score in top:
            row = rows.get(cid)
            record = files.get((row.vector_store_id, row.file_id)) if row else None
            if row is None or record is None:
                continue  # a file removed, or still in progress
            hits.append(Hit(row.vector_store_id, row.file_id, record.filename, record.attributes, score, row.text))
            if len(hits) == max_results:
                break
        return hits

    async def _dense(self, store_ids: Sequence[str], query: np.ndarray, allowed: list[str] | None) -> list[int]:
        ids_parts, score_parts = [], []
        for matrix in await self.matrices.get(list(store_ids), query.shape[0]):
            if not len(matrix.ids):
                continue
            scores = matrix.vectors @ query
            if allowed is not None:
                scores = np.where(matrix.allowed(allowed), scores, -np.inf)
            ids_parts.append(matrix.ids)
            score_parts.append(scores)
        if not ids_parts:
            return []
        ids = np.concatenate(ids_parts)
        scores = np.concatenate(score_parts)
        count = min(CANDIDATES, len(ids))
        top = np.argpartition(-scores, count - 1)[:count]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [int(ids[i]) for i in top if np.isfinite(scores[i])]

    def forget(self, store_id: str) -> None:
        self.matrices.forget(store_id)
