"""The DashScope application wire: JSON bodies and SSE frames (WIRE.md §4–7).

The encoder owns everything the SDKs are strict about: ``finish_reason`` as the
string ``"null"`` then ``"stop"``, incremental versus cumulative ``text``, frame
ids, ``usage`` on every frame, ``request_id`` and ``session_id`` everywhere,
single-line JSON per ``data:`` line.
"""

from __future__ import annotations

import json
from typing import Any

from bailu.errors import BailuError
from bailu.events import DocReferences, Event, Finished, TextDelta, Thought, Usage


_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def dumps(obj: Any) -> str:
    """Single-line JSON, raw UTF-8, except the characters some SSE readers (httpx's
    ``iter_lines``, used by the v2 SDK) treat as line breaks: those are escaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKS)


class DashScopeEncoder:
    def __init__(self, request_id: str, session_id: str, incremental: bool) -> None:
        self.request_id = request_id
        self.session_id = session_id
        self.incremental = incremental
        self.text: list[str] = []
        self.usage: dict[int, Usage] = {}
        self.frame_id = 0
        self.thoughts: list[dict[str, Any]] = []
        self._unsent_thoughts: list[dict[str, Any]] = []
        self.doc_references: list[dict[str, Any]] | None = None

    def _usage(self) -> dict[str, Any]:
        if not self.usage:
            return {}
        return {
            "models": [
                {"model_id": u.model_id, "input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
                for _, u in sorted(self.usage.items())
            ]
        }

    def _payload(self, text: str, finish_reason: str) -> dict[str, Any]:
        output: dict[str, Any] = {"session_id": self.session_id, "finish_reason": finish_reason, "text": text}
        # thoughts: each once when incremental, all of them on every frame when cumulative
        thoughts = self._unsent_thoughts if self.incremental else self.thoughts
        if thoughts:
            output["thoughts"] = list(thoughts)
            self._unsent_thoughts = []
        if finish_reason == "stop" and self.doc_references is not None:
            output["doc_references"] = self.doc_references
        return {"output": output, "usage": self._usage(), "request_id": self.request_id}

    def feed(self, event: Event) -> dict[str, Any] | None:
        """Apply one event; returns a frame payload when the event produces a frame."""
        if isinstance(event, Usage):
            self.usage[event.index] = event
            return None
        if isinstance(event, TextDelta):
            self.text.append(event.text)
            return self._payload(event.text if self.incremental else "".join(self.text), "null")
        if isinstance(event, Thought):
            self.thoughts.append(event.item)
            self._unsent_thoughts.append(event.item)
            return None
        if isinstance(event, DocReferences):
            self.doc_references = event.items
            return None
        if isinstance(event, Finished):
            return self._payload("" if self.incremental else "".join(self.text), "stop")
        return None

    def body(self) -> dict[str, Any]:
        """The non-stream response once the run has finished."""
        self.incremental = False
        return self._payload("".join(self.text), "stop")

    # -- SSE ------------------------------------------------------------------------------

    def sse(self, payload: dict[str, Any]) -> bytes:
        self.frame_id += 1
        return f"id:{self.frame_id}\nevent:result\n:HTTP_STATUS/200\ndata:{dumps(payload)}\n\n".encode()

    def sse_error(self, error: BailuError) -> bytes:
        self.frame_id += 1
        return (
            f"id:{self.frame_id}\nevent:error\n:HTTP_STATUS/{error.status}\nstatus:{error.status}\n"
            f"data:{dumps(error.to_body(self.request_id))}\n\n"
        ).encode()


KEEPALIVE = b":keepalive\n\n"
