"""The ``llama-cpp`` provider: a GGUF model run in-process by llama-cpp-python.

With no ``model_path`` it runs the embedded model (bailu.models.embedded). It needs
the optional dependencies (``pip install 'bailu[local]'``); without them every
call answers 503 ``ModelUnavailable`` naming the missing extra.

How it behaves:

* the model is loaded once per process, lazily, in a worker thread;
* one generation runs at a time (a llama.cpp context is not thread-safe);
  callers wait in FIFO order, at most ``max_queue`` of them (default 16) — one
  more gets 503 ``ModelServingError`` at once — and for at most
  ``queue_timeout`` seconds (default 300, then ``RequestTimeOut``);
* generation runs in a worker thread and streams tokens to the event loop, so it
  never blocks it; when the caller goes away the thread stops at the next token;
* usage comes from the model's own tokenizer (prompt tokens in the context,
  one output token per streamed chunk);
* a system message is always sent (``system_prompt``, default "You are a
  helpful assistant."), because Qwen's template otherwise inserts its own.

Options (in ``[models.NAME]``): ``model_path``, ``n_ctx`` (4096), ``n_threads``
(all cores), ``max_queue``, ``queue_timeout``, ``system_prompt``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread

from bailu.config import ModelConfig
from bailu.errors import BailuError, InvalidParameter, ModelServingError, ModelUnavailable, RequestTimeOut
from bailu.models import ChatChunk, ChatRequest, TokenUsage
from bailu.models.embedded import INSTALL_HINT, ensure_model_file

DEFAULT_SYSTEM = "You are a helpful assistant."
log = logging.getLogger("bailu.models")

#: loaded models, one per (file, context size, threads) per process, each with the lock
#: its worker threads hold while generating (a llama.cpp context is not thread-safe)
_LOADED: dict[tuple[str, int, int], tuple[Any, threading.Lock]] = {}
_LOADING = threading.Lock()


@atexit.register
def _close_loaded() -> None:
    """Free the models before interpreter shutdown tears down what llama.cpp's finaliser needs."""
    for llm, _busy in _LOADED.values():
        close = getattr(llm, "close", None)
        if close is not None:
            close()
    _LOADED.clear()
    # llama-cpp-python opens /dev/null twice at import and never closes it
    utils = sys.modules.get("llama_cpp._utils")
    for name in ("outnull_file", "errnull_file"):
        f = getattr(utils, name, None)
        if f is not None and not f.closed:
            f.close()


class _End:
    def __init__(self, finish_reason: str, usage: TokenUsage) -> None:
        self.finish_reason = finish_reason
        self.usage = usage


def llama_cpp_installed() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


class LlamaCppChatModel:
    def __init__(self, config: ModelConfig) -> None:
        self.name = config.name
        opts = config.options
        self.model_path = opts.get("model_path")
        self.n_ctx = int(opts.get("n_ctx", 4096))
        self.n_threads = int(opts.get("n_threads", os.cpu_count() or 2))
        self.max_queue = int(opts.get("max_queue", 16))
        self.queue_timeout = float(opts.get("queue_timeout", 300))
        self.system_prompt = str(opts.get("system_prompt", DEFAULT_SYSTEM))
        self._llm: Any = None
        self._busy: threading.Lock | None = None
        self._turn: asyncio.Lock | None = None
        self._waiting = 0

    # -- loading ----------------------------------------------------------------------------

    def _load(self) -> Any:
        with _LOADING:
            if self._llm is not None:
                return self._llm
            try:
                import llama_cpp
            except ImportError:
                raise ModelUnavailable(
                    f"Model '{self.name}' runs on llama.cpp, which is not installed: {INSTALL_HINT}."
                ) from None
            path = Path(self.model_path) if self.model_path else ensure_model_file()
            if not path.is_file():
                raise ModelUnavailable(f"Model '{self.name}': its model file is missing (see model_path in the server config).")
            key = (str(path.resolve()), self.n_ctx, self.n_threads)
            if key not in _LOADED:
                llm = llama_cpp.Llama(model_path=key[0], n_ctx=self.n_ctx, n_threads=self.n_threads, verbose=False)
                _LOADED[key] = (llm, threading.Lock())
            self._llm, self._busy = _LOADED[key]
            return self._llm

    async def load(self) -> Any:
        """Load the model off the event loop (once per process)."""
        if self._llm is not None:
            return self._llm
        return await anyio.to_thread.run_sync(self._load)

    # -- generation ------------------------------------------------------------------------

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        messages = list(request.messages)
        if not messages or messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        kw: dict[str, Any] = {"messages": messages, "stream": True}
        s = request.sampling()
        for ours, theirs in (
            ("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"), ("seed", "seed"),
            ("max_tokens", "max_tokens"), ("stop", "stop"), ("presence_penalty", "presence_penalty"),
            ("frequency_penalty", "frequency_penalty"), ("repetition_penalty", "repeat_penalty"),
        ):
            if ours in s:
                kw[theirs] = s[ours]
        for key in ("response_format", "tools", "tool_choice"):
            if key in request.extra:
                kw[key] = request.extra[key]
        return kw

    def _fit(self, llm: Any, messages: list[dict[str, str]], max_tokens: int | None) -> list[dict[str, str]]:
        """Drop the oldest turns (never the system message or the last message) until the
        prompt leaves room for the answer in the context window."""
        budget = self.n_ctx - (max_tokens or min(512, self.n_ctx // 4))

        def size(m: dict[str, str]) -> int:
            return len(llm.tokenize(m["content"].encode("utf-8"), add_bos=False, special=False)) + 8  # + template tokens

        sizes = [size(m) for m in messages]
        first = 1 if messages and messages[0]["role"] == "system" else 0
        while sum(sizes) > budget and len(messages) - first > 1:
            del messages[first], sizes[first]
        return messages

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        if self._turn is None:
            self._turn = asyncio.Lock()
        turn = self._turn
        if self._waiting >= self.max_queue:
            raise ModelServingError()
        self._waiting += 1
        try:
            async with asyncio.timeout(self.queue_timeout):
                await turn.acquire()
        except TimeoutError:
            raise RequestTimeOut(f"Request timed out waiting for model '{self.name}'.") from None
        finally:
            self._waiting -= 1
        released = False
        try:
            llm = await self.load()
            busy = self._busy
            assert busy is not None
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            stop = threading.Event()
            kwargs = self._kwargs(request)

            def put(item: Any) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                except RuntimeError:  # the loop is gone
                    pass

            def generate() -> None:
                try:
                    with busy:
                        put(generate_locked())
                except ValueError as exc:  # llama-cpp-python: "Requested tokens … exceed context window"
                    if "context window" not in str(exc):
                        put(exc)
                    else:
                        put(InvalidParameter(f"The input is too long for model '{self.name}' ({self.n_ctx} tokens of context)."))
                except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                    put(exc)

            def generate_locked() -> _End:
                n_in = -1
                n_out = 0
                finish = "stop"
                kwargs["messages"] = self._fit(llm, kwargs["messages"], kwargs.get("max_tokens"))
                chunks = llm.create_chat_completion(**kwargs)
                try:
                    for chunk in chunks:
                        if stop.is_set():
                            finish = "cancelled"
                            break
                        if n_in < 0:  # the prompt is in the context, nothing generated yet
                            n_in = int(llm.n_tokens)
                        choice = (chunk.get("choices") or [{}])[0]
                        delta = choice.get("delta") or {}
                        text = delta.get("content") or ""
                        calls = delta.get("tool_calls")
                        if text or calls:
                            # the k-th sampled token is streamed before it is evaluated
                            n_out = int(llm.n_tokens) - n_in + 1
                            put(ChatChunk(text=text, usage=TokenUsage(n_in, n_out), tool_calls=calls))
                        finish = choice.get("finish_reason") or finish
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()
                return _End(finish, TokenUsage(max(n_in, 0), n_out))

            worker = loop.run_in_executor(None, generate)
            # the next caller may only start once this thread has let go of the model
            worker.add_done_callback(lambda _f: turn.release())
            released = True
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, _End):
                        yield ChatChunk(usage=item.usage, finish_reason=item.finish_reason)
                        return
                    if isinstance(item, BailuError):
                        raise item
                    if isinstance(item, BaseException):
                        log.error("model %s failed", self.name, exc_info=item)
                        raise ModelUnavailable(f"Model '{self.name}' failed while generating.") from item
                    yield item
            finally:
                stop.set()
        finally:
            if not released:
                turn.release()

    async def aclose(self) -> None:
        """Loaded models stay loaded for the life of the process (see ``_LOADED``)."""
        self._llm = None
