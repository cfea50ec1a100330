"""The internal event stream. Runtimes yield these; wire encoders turn them into frames.

Runtimes never decide incremental versus cumulative text, frame ids or
``finish_reason`` strings: the encoder does, once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Running token counts of one model invocation (``index`` tells invocations apart)."""

    model_id: str
    input_tokens: int
    output_tokens: int
    index: int = 0


@dataclass(frozen=True, slots=True)
class Finished:
    """The run completed; ``finish_reason`` as the model reported it."""

    finish_reason: str = "stop"


@dataclass(frozen=True, slots=True)
class Thought:
    """A step of the run shown with ``has_thoughts`` (WIRE.md §8); keys as on the wire."""

    item: dict


@dataclass(frozen=True, slots=True)
class DocReferences:
    """The documents the answer cites (``output.doc_references``)."""

    items: list


Event = TextDelta | Usage | Finished | Thought | DocReferences
