"""Chat models: one small async protocol, providers behind it, imported lazily.

A provider turns a :class:`ChatRequest` into an async stream of
:class:`ChatChunk`. Providers map their own failures (httpx, llama.cpp, …) to
``bailu.errors`` upstream errors before they leave the provider.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from bailu.config import ModelConfig
from bailu.errors import ModelUnavailable

Message = dict[str, str]

_PROVIDERS = {
    "openai": "bailu.models.openai:OpenAIChatModel",
    "scripted": "bailu.models.scripted:ScriptedChatModel",
    "llama-cpp": "bailu.models.llama_cpp:LlamaCppChatModel",
}


@dataclass
class ChatRequest:
    messages: list[Message]
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def sampling(self) -> dict[str, Any]:
        """The set sampling fields, by name."""
        names = (
            "temperature", "top_p", "top_k", "seed", "max_tokens", "stop",
            "presence_penalty", "frequency_penalty", "repetition_penalty",
        )
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass(frozen=True, slots=True)
class TokenUsage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ChatChunk:
    """A piece of the answer. ``usage`` is the best running count known at this point."""

    text: str = ""
    usage: TokenUsage | None = None
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI-shaped deltas, when the model calls a tool


class ChatModel(Protocol):
    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]: ...

    async def aclose(self) -> None: ...


class ModelRegistry:
    """Configured models by name; a provider is built on first use."""

    def __init__(self, configs: dict[str, ModelConfig]) -> None:
        self.configs = configs
        self._models: dict[str, ChatModel] = {}

    def get(self, name: str) -> ChatModel:
        model = self._models.get(name)
        if model is None:
            config = self.configs.get(name)
            if config is None:
                raise ModelUnavailable(f"Model '{name}' used by this app is not configured on this server.")
            module, _, cls = _PROVIDERS[config.provider].partition(":")
            model = getattr(importlib.import_module(module), cls)(config)
            self._models[name] = model
        return model

    async def aclose(self) -> None:
        for model in self._models.values():
            await model.aclose()
        self._models.clear()
