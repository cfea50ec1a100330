"""A recording fake OpenAI-compatible upstream, served for real on loopback.

Its behaviour is chosen by the ``model`` name bailu sends (set per model in the
test bailu.toml), so one upstream serves every scenario:

* ``fake-echo``    streams ``"upstream heard: <last user message>"`` word by word, with usage
* ``fake-nousage`` the same without a usage chunk
* ``fake-500``     answers HTTP 500
* ``fake-429``     answers HTTP 429
* ``fake-400``     answers HTTP 400 with an OpenAI error body
* ``fake-slow``    waits 5 s before answering (bailu's timeout is shorter)
* ``fake-hang``    streams one chunk, then waits for the client to go away
* ``fake-break``   streams two chunks, then drops the connection

It also serves the knowledge endpoints: ``/v1/embeddings`` (a hashed bag of words, so
texts sharing words are near; deliberately not unit length; ``fake-500`` fails,
``fake-embed-slow`` takes 0.5 s), and
rerank in three shapes — ``/v1/rerank`` (Jina / Cohere), ``/rerank`` (TEI) and DashScope's
``/api/v1/services/rerank/text-rerank/text-rerank`` — scoring the share of the query's
words a document contains. Those calls are recorded in ``calls`` as (path, body).

Every chat request body is recorded in ``requests``; a stream whose client went away
is recorded in ``disconnects`` (by the ``seed`` it carried, if any).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
import time
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _words(text: str) -> list[str]:
    """Lower-cased words, and each CJK character on its own."""
    return re.findall(r"[a-z0-9]+|[\u4e00-\u9fff]", text.lower())


def _chunk(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnects: list[Any] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.call_headers: list[dict[str, str]] = []  # one per entry of ``calls``
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(routes=[
            Route("/v1/chat/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            Route("/v1/rerank", self.rerank, methods=["POST"]),
            Route("/rerank", self.rerank, methods=["POST"]),
            Route("/api/v1/services/rerank/text-rerank/text-rerank", self.rerank, methods=["POST"]),
        ])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> FakeUpstream:
        self.thread.start()
        deadline = time.time() + 10
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("fake upstream did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)

    def last(self, model: str | None = None) -> dict[str, Any]:
        for body in reversed(self.requests):
            if model is None or body.get("model") == model:
                return body
        raise AssertionError(f"no upstream request for model {model!r}")

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "fake-echo", "object": "model"}]})

    async def embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.calls.append((request.url.path, body))
        self.call_headers.append(dict(request.headers))
        if body.get("model") == "fake-500":
            return JSONResponse({"error": {"message": "embedding backend down"}}, status_code=500)
        if body.get("model") == "fake-embed-slow":
            await asyncio.sleep(0.5)
        dim = int(body.get("dimensions") or 32)
        data = []
        for i, text in enumerate(body["input"]):
            vec = [0.0] * dim
            for word in _words(text):
                vec[int(hashlib.md5(word.encode()).hexdigest(), 16) % dim] += 3.0
            data.append({"object": "embedding", "index": i, "embedding": vec})
        data.reverse()  # answers in any order carry their index
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"), "usage": {"prompt_tokens": 1, "total_tokens": 1}})

    async def rerank(self, request: Request) -> Response:
        body = await request.json()
        path = request.url.path
        self.calls.append((path, body))
        self.call_headers.append(dict(request.headers))
        query, docs = (body["input"]["query"], body["input"]["documents"]) if path.startswith("/api/") else (body["query"], body.get("documents") or body.get("texts"))
        wanted = set(_words(query))
        scores = [round(len(wanted & set(_words(d))) / max(len(wanted), 1), 4) for d in docs]
        if path == "/rerank":  # TEI
            return JSONResponse([{"index": i, "score": s} for i, s in sorted(enumerate(scores), key=lambda t: -t[1])])
        results = [{"index": i, "relevance_score": s} for i, s in sorted(enumerate(scores), key=lambda t: -t[1])]
        if path.startswith("/api/"):
            return JSONResponse({"output": {"results": results}, "usage": {"total_tokens": 1}, "request_id": "r1"})
        return JSONResponse({"id": "r1", "model": body.get("model"), "results": results})

    async def completions(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        model = body.get("model", "")
        if model == "fake-500":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if model == "fake-429":
            return JSONResponse({"error": {"message": "slow down"}}, status_code=429)
        if model == "fake-400":
            return JSONResponse({"error": {"message": "context length exceeded"}}, status_code=400)
        if model == "fake-slow":
            await asyncio.sleep(5)
        users = [m["content"] for m in body["messages"] if m["role"] == "user"]
        words = ["upstream", " heard:", *[" " + w for w in (users[-1] if users else "").split()]]
        prompt_tokens = sum(len(m["content"]) for m in body["messages"])
        tag = body.get("seed")

        async def stream() -> Any:
            try:
                for i, w in enumerate(words):
                    if model == "fake-break" and i == 2:
                        raise RuntimeError("upstream connection dropped")
                    yield _chunk({"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]})
                    if model == "fake-hang":
                        await asyncio.sleep(60)
                yield _chunk({"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
                if model != "fake-nousage":
                    yield _chunk({"id": "c1", "choices": [], "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}})
                yield b"data: [DONE]\n\n"
            except asyncio.CancelledError:
                self.disconnects.append(tag)
                raise

        return StreamingResponse(stream(), media_type="text/event-stream")
