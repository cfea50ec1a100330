"""The ``llama-cpp`` provider: the embedded model, run in-process by llama-cpp-python.

It needs the optional dependencies (``pip install 'bailu[local]'``). Without them
every call answers 503 ``ModelUnavailable`` naming the missing extra, instead of
failing with a traceback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bailu.config import ModelConfig
from bailu.errors import ModelUnavailable
from bailu.models import ChatChunk, ChatRequest


class LlamaCppChatModel:
    def __init__(self, config: ModelConfig) -> None:
        self.name = config.name
        self.config = config

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ModelUnavailable(
                f"Model '{self.name}' is the embedded llama.cpp model, which is not installed: "
                "run pip install 'bailu[local]' or configure another provider in bailu.toml."
            ) from None
        raise ModelUnavailable(f"Model '{self.name}': the embedded llama.cpp runtime is not available in this build.")
        yield ChatChunk()  # pragma: no cover - makes this an async generator

    async def aclose(self) -> None:
        return None
