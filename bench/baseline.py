"""The baseline for the overhead benchmark: a minimal FastAPI + httpx pass-through.

It takes the same DashScope-shaped request as bailu
(``POST /api/v1/apps/{app_id}/completion``), forwards one streaming chat
completion to the OpenAI-compatible upstream, and answers a minimal DashScope
body: JSON, or SSE frames relayed one per upstream content chunk when the request
carries ``X-DashScope-SSE: enable``. No database, no auth, no sessions, no
validation beyond what the relay needs. It is what "a thin proxy in the same
stack" costs, so bailu's figures can be read against it.

Served like bailu (uvicorn, uvloop + httptools, access log off). Run by
``bench/overhead.py``; by hand:
``python bench/baseline.py --port 9001 --upstream http://127.0.0.1:9000/v1``.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

SYSTEM = "You are helpful."


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def create_app(upstream: str, model: str = "fake") -> FastAPI:
    url = upstream.rstrip("/") + "/chat/completions"
    client = httpx.AsyncClient(
        headers={"Accept": "text/event-stream"},
        timeout=httpx.Timeout(300.0, connect=10.0),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),  # as bailu's openai provider
    )
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def deltas(prompt: str, usage: dict[str, int]) -> AsyncIterator[str]:
        """The upstream's content deltas; fills ``usage`` when the upstream reports it."""
        body = {
            "model": model,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with client.stream("POST", url, json=body) as resp:
            resp.raise_for_status()
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break  # as bailu's openai provider does (see docs/performance.md on connection reuse)
                obj = json.loads(data)
                if obj.get("usage"):
                    usage["input_tokens"] = obj["usage"].get("prompt_tokens", 0)
                    usage["output_tokens"] = obj["usage"].get("completion_tokens", 0)
                for choice in obj.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        yield text

    def payload(rid: str, session: str, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "output": {"session_id": session, "finish_reason": finish, "text": text},
            "usage": {"models": [{"model_id": model, **usage}]},
            "request_id": rid,
        }

    @app.post("/api/v1/apps/{app_id}/completion")
    async def completion(app_id: str, request: Request) -> Response:
        data = json.loads(await request.body())
        prompt = data["input"]["prompt"]
        rid, session = str(uuid.uuid4()), uuid.uuid4().hex
        usage: dict[str, int] = {"input_tokens": 0, "output_tokens": 0}
        if request.headers.get("x-dashscope-sse", "").lower() != "enable":
            text = "".join([t async for t in deltas(prompt, usage)])
            return JSONResponse(payload(rid, session, text, "stop", usage), headers={"x-request-id": rid})

        async def frames() -> AsyncIterator[bytes]:
            n = 0
            async for text in deltas(prompt, usage):
                n += 1
                yield f"id:{n}\nevent:result\n:HTTP_STATUS/200\ndata:{_dumps(payload(rid, session, text, 'null', usage))}\n\n".encode()
            yield f"id:{n + 1}\nevent:result\n:HTTP_STATUS/200\ndata:{_dumps(payload(rid, session, '', 'stop', usage))}\n\n".encode()

        return StreamingResponse(frames(), media_type="text/event-stream;charset=UTF-8", headers={"x-request-id": rid})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:9000/v1")
    ap.add_argument("--log-level", default="warning")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the baseline binds to loopback only")
    import uvicorn

    # the same uvicorn settings `bailu serve` uses
    uvicorn.run(create_app(a.upstream), host=a.host, port=a.port, log_level=a.log_level, access_log=False,
                timeout_graceful_shutdown=5)


if __name__ == "__main__":
    main()
