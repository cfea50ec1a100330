"""The ``openai`` provider: any OpenAI-compatible ``/chat/completions`` server.

vLLM, Ollama, llama.cpp's server, DashScope compatible-mode and OpenAI itself.
Always streams upstream (``stream_options.include_usage``), so a non-stream app
call and a stream app call cost the upstream the same and cancellation works
the same way: closing the stream closes the upstream connection.

Options (in ``[models.NAME]``, besides base_url/model/api_key/timeout):

* ``extra_body`` — a table merged into every request body (e.g.
  ``{chat_template_kwargs = {enable_thinking = false}}`` for vLLM).
* ``continuous_usage`` — ask for usage on every chunk
  (``stream_options.continuous_usage_stats``, vLLM); default false.

Until the upstream reports usage, ``output_tokens`` counts content chunks and
``input_tokens`` is 0; the upstream's own counts replace them when they arrive
(the final frame always carries them when the upstream reports usage).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from bailu.config import ModelConfig
from bailu.errors import InvalidParameter, ModelServiceFailed, RequestTimeOut, Throttling
from bailu.models import ChatChunk, ChatRequest, TokenUsage


class OpenAIChatModel:
    def __init__(self, config: ModelConfig) -> None:
        self.name = config.name
        self.config = config
        self.url = config.base_url.rstrip("/") + "/chat/completions"  # type: ignore[union-attr]
        headers = {"Accept": "text/event-stream"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self.client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(config.timeout, connect=config.connect_timeout),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )
        self.extra_body: dict[str, Any] = dict(config.options.get("extra_body") or {})
        self.continuous_usage = bool(config.options.get("continuous_usage", False))

    def body(self, request: ChatRequest) -> dict[str, Any]:
        stream_options: dict[str, Any] = {"include_usage": True}
        if self.continuous_usage:
            stream_options["continuous_usage_stats"] = True
        body: dict[str, Any] = {
            "model": self.config.upstream_model,
            "messages": request.messages,
            "stream": True,
            "stream_options": stream_options,
        }
        body.update(request.sampling())
        body.update(self.extra_body)
        body.update(request.extra)
        return body

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        try:
            async with self.client.stream("POST", self.url, json=self.body(request)) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise self._http_error(resp)
                async for chunk in self._chunks(resp):
                    yield chunk
        except httpx.TimeoutException:
            raise RequestTimeOut(f"Request timed out, please try again later. (model '{self.name}')") from None
        except httpx.HTTPError as exc:
            raise ModelServiceFailed(
                f"Failed to request model service for model '{self.name}': {type(exc).__name__}."
            ) from None

    async def _chunks(self, resp: httpx.Response) -> AsyncIterator[ChatChunk]:
        n_chunks = 0
        usage: TokenUsage | None = None
        finish: str | None = None
        async for line in _lines(resp):
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            try:
                obj = json.loads(data)
            except ValueError:
                raise ModelServiceFailed(f"Model '{self.name}' sent a malformed stream chunk.") from None
            if obj.get("error"):
                raise ModelServiceFailed(f"Model '{self.name}' failed: {_error_text(obj)}")
            if obj.get("usage"):
                u = obj["usage"]
                usage = TokenUsage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
            text = ""
            for choice in obj.get("choices") or []:
                delta = choice.get("delta") or {}
                text += delta.get("content") or ""
                finish = choice.get("finish_reason") or finish
            if text:
                n_chunks += 1
                running = usage or TokenUsage(0, n_chunks)
                yield ChatChunk(text=text, usage=running)
        yield ChatChunk(usage=usage or TokenUsage(0, n_chunks), finish_reason=finish or "stop")

    def _http_error(self, resp: httpx.Response) -> Exception:
        detail = _error_text(_json_or_none(resp.content) or {}) or resp.text[:200]
        if resp.status_code == 429:
            return Throttling(f"Model '{self.name}' is throttling requests: {detail}")
        if resp.status_code in (408, 504):
            return RequestTimeOut(f"Request timed out, please try again later. (model '{self.name}')")
        if 400 <= resp.status_code < 500 and resp.status_code not in (401, 403, 404):
            return InvalidParameter(f"Model '{self.name}' rejected the request: {detail}")
        return ModelServiceFailed(
            f"Failed to request model service for model '{self.name}': upstream HTTP {resp.status_code}."
        )

    async def aclose(self) -> None:
        await self.client.aclose()


async def _lines(resp: httpx.Response) -> AsyncIterator[str]:
    """SSE lines split on newlines only (not on U+2028 and friends, as ``aiter_lines`` does)."""
    buf = ""
    async for text in resp.aiter_text():
        buf += text
        *lines, buf = buf.split("\n")
        for line in lines:
            yield line.rstrip("\r")
    if buf:
        yield buf


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _error_text(obj: Any) -> str:
    if not isinstance(obj, dict):
        return ""
    err = obj.get("error", obj)
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code") or "")
    return str(err)
