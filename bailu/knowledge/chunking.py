"""Sentence-aware chunking with Bailian's sizes: chunk size 1–6000 characters (default 500),
overlap 0–1024 (default 100, below the chunk size).

Blocks are split into sentences at Bailian's separators (``\\n ， , 。 . ！ ! ； ; ？ ?``,
an ASCII ``.`` or ``,`` only when followed by a space or the end, so ``4.5`` stays whole);
sentences are packed into chunks of at most ``chunk_size`` characters; a chunk never mixes
two headings' sections or two pages; table rows (atomic blocks) are never split. A
sentence longer than a chunk is cut at the chunk size (Python strings index characters,
so a cut never falls inside a CJK character). The overlap repeats the last whole
sentences of the previous chunk, up to ``overlap`` characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bailu.knowledge.parsing import Block

DEFAULT_CHUNK_SIZE = 500
DEFAULT_OVERLAP = 100
MAX_CHUNK_SIZE = 6000
MAX_OVERLAP = 1024

_SENTENCE_END = re.compile(r"(?<=[\n，。！；？!?;])|(?<=[.,])(?=\s|$)")


@dataclass(frozen=True)
class Chunk:
    text: str
    title: str
    pages: tuple[int, ...]


def check_sizes(chunk_size: int, overlap: int) -> None:
    """Bailian's rules for CreateIndex; raises ValueError naming the problem."""
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be between 1 and {MAX_CHUNK_SIZE}, got {chunk_size}")
    if not 0 <= overlap <= MAX_OVERLAP:
        raise ValueError(f"overlap must be between 0 and {MAX_OVERLAP}, got {overlap}")
    if overlap >= chunk_size:
        raise ValueError(f"overlap ({overlap}) must be smaller than the chunk size ({chunk_size})")


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(text) if s and s.strip()]


def chunk_blocks(blocks: list[Block], chunk_size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_OVERLAP) -> list[Chunk]:
    check_sizes(chunk_size, overlap)
    chunks: list[Chunk] = []
    # group consecutive blocks of one section (same title and page)
    groups: list[list[Block]] = []
    for b in blocks:
        if groups and (groups[-1][-1].title, groups[-1][-1].page) == (b.title, b.page):
            groups[-1].append(b)
        else:
            groups.append([b])
    for group in groups:
        units: list[str] = []
        for b in group:
            if b.atomic:
                units.append(b.text + "\n")
            else:
                pieces = sentences(b.text)
                if pieces:
                    pieces[-1] = pieces[-1].rstrip() + "\n"
                for piece in pieces:
                    units += [piece[i : i + chunk_size] for i in range(0, len(piece), chunk_size)]
        pages = (group[0].page,) if group[0].page is not None else ()
        for text in _pack(units, chunk_size, overlap):
            chunks.append(Chunk(text=text.strip(), title=group[0].title, pages=pages))
    return [c for c in chunks if c.text]


def _pack(units: list[str], size: int, overlap: int) -> list[str]:
    """Greedy packing; each new chunk starts with the previous chunk's tail sentences (≤ overlap)."""
    out: list[str] = []
    current: list[str] = []
    length = 0
    fresh = 0  # units in ``current`` that no earlier chunk holds
    for unit in units:
        if current and length + len(unit) > size:
            out.append("".join(current))
            tail: list[str] = []
            tail_len = 0
            for prev in reversed(current):
                if tail_len + len(prev) > overlap or tail_len + len(prev) + len(unit) > size:
                    break
                tail.insert(0, prev)
                tail_len += len(prev)
            current, length, fresh = tail, tail_len, 0
        current.append(unit)
        length += len(unit)
        fresh += 1
    if current and fresh:
        out.append("".join(current))
    return out
