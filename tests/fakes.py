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

Every request body is recorded in ``requests``; a stream whose client went away
is recorded in ``disconnects`` (by the ``seed`` it carried, if any).
"""

from __future__ import annotations

import asyncio
import json
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


def _chunk(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.disconnects: list[Any] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(routes=[
            Route("/v1/chat/completions", self.completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
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
