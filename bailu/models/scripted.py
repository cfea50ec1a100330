"""The ``scripted`` provider: deterministic answers for tests and demos, no model at all.

Options (in ``[models.NAME]``):

* ``reply`` — a template; ``{prompt}`` (last user message), ``{system}``,
  ``{turns}`` (number of user messages), ``{messages}`` (the JSON transcript).
  Default ``"echo: {prompt}"``.
* ``chunk_tokens`` — tokens per streamed chunk (default 1).
* ``delay_ms`` — pause before each chunk (default 0).
* ``fail_after`` — raise ``ModelServiceFailed`` after this many chunks.

Tokens are words, single CJK characters and punctuation marks; usage counts them.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from bailu.config import ModelConfig
from bailu.errors import ModelServiceFailed
from bailu.models import ChatChunk, ChatRequest, TokenUsage

_TOKEN = re.compile(r"\s*(?:[\u3400-\u9fff\uf900-\ufaff]|[A-Za-z0-9_']+|[^\sA-Za-z0-9_'\u3400-\u9fff\uf900-\ufaff])")


def tokenize(text: str) -> list[str]:
    """Split so that ``"".join(tokenize(t)) == t`` up to trailing whitespace."""
    pieces = _TOKEN.findall(text)
    rest = text[sum(map(len, pieces)):]
    if rest:
        pieces.append(rest)
    return pieces


class ScriptedChatModel:
    def __init__(self, config: ModelConfig) -> None:
        self.name = config.name
        opts = config.options
        self.reply = str(opts.get("reply", "echo: {prompt}"))
        self.chunk_tokens = max(1, int(opts.get("chunk_tokens", 1)))
        self.delay = float(opts.get("delay_ms", 0)) / 1000
        self.fail_after = opts.get("fail_after")

    def answer(self, request: ChatRequest) -> str:
        users = [m["content"] for m in request.messages if m["role"] == "user"]
        system = next((m["content"] for m in request.messages if m["role"] == "system"), "")
        return self.reply.format_map(
            {
                "prompt": users[-1] if users else "",
                "system": system,
                "turns": len(users),
                "messages": json.dumps(request.messages, ensure_ascii=False),
            }
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        tokens = tokenize(self.answer(request))
        if request.max_tokens is not None:
            tokens = tokens[: request.max_tokens]
        n_in = sum(len(tokenize(m["content"])) for m in request.messages)
        sent = 0
        for i in range(0, len(tokens), self.chunk_tokens):
            if self.fail_after is not None and i // self.chunk_tokens >= int(self.fail_after):
                raise ModelServiceFailed(f"Failed to request model service: scripted failure in model '{self.name}'.")
            if self.delay:
                await asyncio.sleep(self.delay)
            piece = tokens[i : i + self.chunk_tokens]
            sent += len(piece)
            yield ChatChunk(text="".join(piece), usage=TokenUsage(n_in, sent))
        yield ChatChunk(usage=TokenUsage(n_in, sent), finish_reason="stop")

    async def aclose(self) -> None:
        return None
