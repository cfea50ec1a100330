"""An instant fake OpenAI-compatible upstream for the overhead benchmark.

``POST /v1/chat/completions`` always answers as a streaming OpenAI server does
(``Transfer-Encoding: chunked``, ``text/event-stream``): content chunks, a usage
chunk, then ``data: [DONE]``. ``GET /health`` answers 200.

* Normal requests get ``--chunks`` content chunks written in one go (no delay).
* Requests whose body contains ``[bench-stream]`` get ``--stream-chunks`` chunks,
  ``--stream-delay`` seconds apart, so that many streams overlap in time.

A raw asyncio server (uvloop when installed) so that the upstream costs as little
CPU as possible. Loopback only. Run by ``bench/overhead.py``; by hand:
``python bench/fake_upstream.py --port 9000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

STREAM_MARKER = b"[bench-stream]"
PROMPT_TOKENS = 12


def chunk_text(i: int) -> str:
    return f"tok{i} "


def expected_text(n: int) -> str:
    return "".join(chunk_text(i) for i in range(n))


def _event(obj: dict) -> bytes:
    data = b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)  # one HTTP chunk per SSE event


def sse_events(n: int) -> list[bytes]:
    """The HTTP chunks of one streamed completion with ``n`` content chunks."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
    out = [_event({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    for i in range(n):
        finish = "stop" if i == n - 1 else None
        out.append(_event({**base, "choices": [{"index": 0, "delta": {"content": chunk_text(i)}, "finish_reason": finish}]}))
    out.append(_event({**base, "choices": [], "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": n, "total_tokens": PROMPT_TOKENS + n}}))
    out.append(b"%x\r\n%s\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n"))
    out.append(b"0\r\n\r\n")
    return out


HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def make_handler(chunks: int, stream_chunks: int, stream_delay: float):
    instant = HEAD + b"".join(sse_events(chunks))
    slow = sse_events(stream_chunks)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                request_line, _, rest = head.partition(b"\r\n")
                length = 0
                close = False
                for line in rest.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                body = await reader.readexactly(length) if length else b""
                method, path = request_line.split(b" ")[:2]
                if method == b"POST" and path.endswith(b"/chat/completions"):
                    if STREAM_MARKER in body:
                        writer.write(HEAD + slow[0])
                        for part in slow[1:-3]:
                            await asyncio.sleep(stream_delay)
                            writer.write(part)
                            await writer.drain()
                        writer.write(b"".join(slow[-3:]))
                    else:
                        writer.write(instant)
                elif path.startswith(b"/health"):
                    writer.write(HEALTH)
                else:
                    writer.write(NOT_FOUND)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


async def serve(host: str, port: int, chunks: int, stream_chunks: int, stream_delay: float) -> None:
    server = await asyncio.start_server(make_handler(chunks, stream_chunks, stream_delay), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=5)
    ap.add_argument("--stream-chunks", type=int, default=20)
    ap.add_argument("--stream-delay", type=float, default=0.05)
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the fake upstream binds to loopback only")
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    with suppress(ImportError):
        import uvloop

        run = uvloop.run
    try:
        run(serve(a.host, a.port, a.chunks, a.stream_chunks, a.stream_delay))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
