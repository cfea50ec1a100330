"""Remote embedding and rerank endpoints (``[embedders.NAME]``, ``[rerankers.NAME]``).

Synchronous httpx clients: ingestion runs in a worker thread and retrieval off the event
loop (``anyio.to_thread``), so a slow endpoint never blocks other requests. Failures are
upstream errors naming the endpoint: a timeout is ``RequestTimeOut``, HTTP 429
``Throttling``, anything else ``ModelServiceFailed``; during ingestion they fail the files
being embedded, with that message, and the job goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import httpx
import numpy as np

from bailu.config import ServiceConfig
from bailu.errors import BailuError, ModelServiceFailed, RequestTimeOut, Throttling


C = TypeVar("C")


class ClientCache(Generic[C]):
    """One client per configured name, made on first use, shared by threads; ``close`` closes them all."""

    def __init__(self) -> None:
        self._clients: dict[str, C] = {}
        self._lock = threading.Lock()

    def get(self, name: str, make: Callable[[], C]) -> C:
        with self._lock:
            if name not in self._clients:
                self._clients[name] = make()
            return self._clients[name]

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            close = getattr(client, "close", None)
            if close is not None:
                close()


class _Client:
    kind = "endpoint"
    remote = True  # the Retriever releases its database connection before calling one

    def __init__(self, config: ServiceConfig) -> None:
        self.name = config.name
        self.config = config
        headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._http = httpx.Client(base_url=config.base_url.rstrip("/") + "/", headers=headers,
                                  timeout=httpx.Timeout(config.timeout, connect=min(10.0, config.timeout)))

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            resp = self._http.post(path, json=body)
        except httpx.TimeoutException:
            raise RequestTimeOut(f"The {self.kind} '{self.name}' timed out.") from None
        except httpx.HTTPError as exc:
            raise ModelServiceFailed(f"The {self.kind} '{self.name}' could not be reached: {type(exc).__name__}.") from None
        if resp.status_code == 429:
            raise Throttling(f"The {self.kind} '{self.name}' is throttling requests.")
        if resp.status_code >= 400:  # the upstream's own message only (never its whole body: it may echo credentials)
            raise ModelServiceFailed(f"The {self.kind} '{self.name}' answered HTTP {resp.status_code}{_message_of(resp)}.")
        try:
            return resp.json()
        except ValueError:
            raise ModelServiceFailed(f"The {self.kind} '{self.name}' sent a body that is not JSON.") from None

    def _bad(self, what: str) -> BailuError:
        return ModelServiceFailed(f"The {self.kind} '{self.name}' sent an unexpected answer: {what}.")


class OpenAIEmbedder(_Client):
    """``POST {base_url}/embeddings`` in OpenAI's shape, ``batch_size`` texts per request."""

    kind = "embedder"

    def embed(self, texts: list[str]) -> np.ndarray:
        out: list[np.ndarray] = []
        for start in range(0, len(texts), self.config.batch_size):
            batch = [t if t.strip() else " " for t in texts[start : start + self.config.batch_size]]  # endpoints refuse empty inputs
            body: dict[str, Any] = {"model": self.config.model, "input": batch, "encoding_format": "float"}
            if self.config.dimensions:
                body["dimensions"] = self.config.dimensions
            data = self._post("embeddings", body)
            try:
                rows = sorted(data["data"], key=lambda r: r["index"])
                indexes = [r["index"] for r in rows]
                vectors = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
            except (KeyError, TypeError, ValueError):
                raise self._bad("no data[].embedding") from None
            if indexes != list(range(len(batch))) or vectors.ndim != 2:
                raise self._bad(f"{len(rows)} vectors (indexes {indexes[:5]}...) for {len(batch)} texts")
            out.append(vectors)
        if not out:
            return np.zeros((0, self.config.dimensions or 0), dtype=np.float32)
        matrix = np.concatenate(out)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)  # cosine as an inner product


class ApiReranker(_Client):
    """Three request shapes: ``rerank-api`` (Jina / Cohere), ``tei`` and ``dashscope``."""

    kind = "reranker"

    def rerank(self, query: str, documents: list[str]) -> list[float]:
        if not documents:
            return []
        provider, model = self.config.provider, self.config.model
        try:
            if provider == "tei":
                data = self._post("rerank", {"query": query, "texts": documents, "raw_scores": False, "truncate": True})
                pairs = [(r["index"], r["score"]) for r in data]
            elif provider == "dashscope":
                data = self._post("services/rerank/text-rerank/text-rerank", {
                    "model": model, "input": {"query": query, "documents": documents},
                    "parameters": {"top_n": len(documents), "return_documents": False},
                })
                pairs = [(r["index"], r["relevance_score"]) for r in data["output"]["results"]]
            else:
                data = self._post("rerank", {"model": model, "query": query, "documents": documents, "top_n": len(documents), "return_documents": False})
                pairs = [(r["index"], r["relevance_score"]) for r in data["results"]]
        except (KeyError, TypeError):
            raise self._bad("no scores in the expected fields") from None
        scores = [0.0] * len(documents)
        for index, score in pairs:
            if not isinstance(index, int) or not 0 <= index < len(documents) or not isinstance(score, (int, float)):
                raise self._bad(f"index {index!r}, score {score!r}")
            scores[index] = float(score)
        return scores


def _message_of(resp: httpx.Response) -> str:
    """``: <message>`` from an error body in the usual shapes, or nothing."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        err = body.get("error", body)
        msg = err.get("message") if isinstance(err, dict) else err
        if isinstance(msg, str) and msg:
            return ": " + msg[:200]
    return ""
