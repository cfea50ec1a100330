"""Rerankers: score a query against candidate chunks, 0–1, more relevant higher.

None is built in (a cross-encoder would add a model download); each ``[rerankers.NAME]``
of bailu.toml names an endpoint (bailu.knowledge.remote): ``rerank-api`` (the
Jina / Cohere ``/rerank`` shape that vLLM, llama.cpp's server, Xinference and LocalAI
serve), ``tei`` (Hugging Face text-embeddings-inference) or ``dashscope`` (gte-rerank).
A knowledge base names its reranker (like Bailian's ``RerankModelName``); with one, the
fused candidates are reordered by it and its score is the one reported and thresholded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bailu.errors import ModelUnavailable
from bailu.knowledge.remote import ClientCache

if TYPE_CHECKING:
    from bailu.config import KnowledgeSettings, ServiceConfig


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, documents: list[str]) -> list[float]:
        """One relevance score per document, in their order."""
        ...


class Rerankers:
    def __init__(self, settings: KnowledgeSettings | None = None) -> None:
        self._configs: dict[str, ServiceConfig] = dict(settings.rerankers) if settings else {}
        self._default = settings.reranker if settings else None
        self._clients: ClientCache[Reranker] = ClientCache()

    def default_name(self) -> str | None:
        return self._default

    def known(self, name: str) -> bool:
        return name in self._configs

    def get(self, name: str) -> Reranker:
        config = self._configs.get(name)
        if config is None:
            raise ModelUnavailable(f"The reranker '{name}' of this knowledge base is not configured: add [rerankers.{name}] to bailu.toml.")
        from bailu.knowledge.remote import ApiReranker

        return self._clients.get(name, lambda: ApiReranker(config))

    def close(self) -> None:
        self._clients.close()
