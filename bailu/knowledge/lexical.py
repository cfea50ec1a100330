"""Lexical retrieval: BM25 (bm25s) over jieba-segmented text, for Chinese and English alike.

jieba's search-mode segmentation cuts Chinese into words and their sub-words
(``百炼手机`` → ``百炼``, ``手机``); Latin words and numbers stay whole and are
lower-cased; punctuation and whitespace are dropped. The same tokenizer runs on
chunks and on queries. A chunk's tokens are computed once, when it is indexed, and stored
with it (``kb_chunks.tokens``): rebuilding an index after a change then costs BM25's counting
alone, not the segmentation (at 100k chunks: ~3 s instead of ~60 s).
"""

from __future__ import annotations

import functools
import logging
import re
import threading

import numpy as np

_WORD = re.compile(r"\w", re.UNICODE)
_init_lock = threading.Lock()
_ready = False


def _jieba():  # type: ignore[no-untyped-def]
    global _ready
    import jieba

    if not _ready:
        with _init_lock:
            if not _ready:
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _ready = True
    return jieba


def tokenize(text: str) -> list[str]:
    """jieba's search-mode tokens of ``text``, lower-cased, word characters only.

    jieba cuts a text block by block (runs of Han characters, Latin letters, digits and
    ``+#&._%-``; everything else falls apart into single characters), each block on its own:
    so the cut of each short block is cached, which skips most of the work on English, whose
    blocks (words) repeat (2.5x faster on English documentation; identical tokens)."""
    j = _jieba()
    out: list[str] = []
    for block in j.re_han_default.split(text):
        if not block:
            continue
        if not j.re_han_default.match(block):
            out.extend(c.lower() for c in block if _WORD.match(c))
        elif len(block) <= _CACHED_BLOCK:  # words and short phrases repeat; long Chinese runs rarely do
            out.extend(_cut_block(block))
        else:
            out.extend(t.lower() for t in j.lcut_for_search(block) if _WORD.search(t))
    return out


_CACHED_BLOCK = 24  # characters: at most 2^16 such blocks are kept (a few MB)


@functools.lru_cache(maxsize=1 << 16)
def _cut_block(block: str) -> tuple[str, ...]:
    return tuple(t.lower() for t in _jieba().lcut_for_search(block) if _WORD.search(t))


def chunk_tokens(title: str, text: str) -> str:
    """What ``kb_chunks.tokens`` stores: the chunk's tokens, space-separated (jieba never puts
    whitespace inside a token)."""
    return " ".join(tokenize(f"{title}\n{text}"))


class LexicalIndex:
    """BM25 over a fixed list of documents (rebuilt when the knowledge base changes)."""

    def __init__(self, tokens: list[str]) -> None:
        """``tokens``: one :func:`chunk_tokens` string per document."""
        import bm25s

        self.size = len(tokens)
        self._bm25 = bm25s.BM25()
        corpus = [t.split() or ["\u0000"] for t in tokens]
        if corpus:
            self._bm25.index(corpus, show_progress=False)
        self._vocab = set(self._bm25.vocab_dict) if corpus else set()

    def scores(self, query: str, context: str = "") -> np.ndarray:
        """One BM25 score per document (0 where no query term occurs). ``context`` (the previous
        question of a conversation) counts half as much as the query: its words are added once,
        the query's twice."""
        tokens = tokenize(query)
        if context:
            tokens = tokens + tokens + tokenize(context)
        # "file lock" also looks for "filelock", "data frame" for "dataframe": Latin compounds
        # are one token in the text and two in the question (or the other way round) often
        joined = [a + b for a, b in zip(tokens, tokens[1:], strict=False) if a.isascii() and b.isascii() and a.isalnum() and b.isalnum()]
        terms = [t for t in tokens + joined if t in self._vocab]
        if not terms or not self.size:
            return np.zeros(self.size, dtype=np.float32)
        return np.asarray(self._bm25.get_scores(terms), dtype=np.float32)
