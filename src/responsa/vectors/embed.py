"""Embedders: text -> unit-length float32 vectors, for the dense half of file_search.

`--embeddings-base-url` names an OpenAI-compatible `/embeddings` API (vLLM, llama.cpp, Ollama,
TEI, OpenAI); without it the embedded all-MiniLM-L6-v2 (minilm.py) runs in this process when
its packages are installed, and without those search is full-text only. Weights are never
downloaded at run time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import numpy as np

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("responsa.vectors")
BATCH = 32  # texts per request or per forward pass


class EmbeddingError(Exception):
    pass


class Embedder(Protocol):
    name: str

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One unit-length float32 row per text."""


def normalized(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


class EngineEmbedder:
    """An OpenAI-compatible `POST {base}/embeddings`."""

    def __init__(self, base_url: str, model: str, api_key: str | None, timeout: float = 120) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.name = f"{model} at {base_url}"
        self.headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def embed(self, texts: list[str]) -> np.ndarray:
        rows: list[list[float]] = []
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            for start in range(0, len(texts), BATCH):
                part = texts[start:start + BATCH]
                try:
                    async with session.post(self.url, json={"model": self.model, "input": part},
                                            headers=self.headers) as r:
                        body: Any = await r.json(content_type=None)
                        if r.status != 200:
                            raise EmbeddingError(f"the embeddings API answered {r.status}: {str(body)[:300]}")
                except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                    raise EmbeddingError(f"the embeddings API failed: {e!r}") from None
                data = sorted(body.get("data") or [], key=lambda d: d.get("index", 0))
                if len(data) != len(part):
                    raise EmbeddingError(f"the embeddings API returned {len(data)} vectors for {len(part)} texts")
                rows.extend(d["embedding"] for d in data)
        return normalized(np.array(rows, dtype=np.float32))


class LocalEmbedder:
    """The embedded model, run in a worker thread so that the event loop never waits on it."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.name = model.name
        self.lock = asyncio.Lock()  # one forward pass at a time: the CPU is shared with everything else

    async def embed(self, texts: list[str]) -> np.ndarray:
        async with self.lock:
            return await asyncio.to_thread(self.model.encode, texts)


def make_embedder(settings: Settings) -> Embedder | None:
    if settings.embeddings_base_url:
        return EngineEmbedder(settings.embeddings_base_url, settings.embeddings_model, settings.embeddings_api_key)
    from .minilm import MiniLM

    model = MiniLM.find()
    if model is None:
        log.warning("file_search: no embedder (no --embeddings-base-url and the embedded all-MiniLM-L6-v2 is not "
                    "installed): search is full-text only")
        return None
    return LocalEmbedder(model)
