"""Hybrid retrieval: BM25 and dense vectors, fused by reciprocal rank, filtered, cut.

Each knowledge base is held in memory as one snapshot per revision: its enabled
chunks, a BM25 index and a contiguous float32 matrix of their vectors (exact
search: one matrix-vector product). A change to the knowledge base bumps its
revision and the next query rebuilds the snapshot.

Scores: each list (lexical, dense) ranks the candidates; a chunk's fused score is
``Σ 1/(60 + rank)`` over the lists it appears in, divided by the best score
possible for a chunk of its knowledge base, so it lies in (0, 1] and 1 means
"first in every list" (results of several knowledge bases compare on one scale). The similarity
threshold applies to that score.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from bailu.knowledge.embedders import get_embedder
from bailu.knowledge.lexical import LexicalIndex, chunk_tokens
from bailu.store.tables import KbChunk, KbFile, KnowledgeBase

RRF_K = 60
#: MiniLM barely separates Chinese texts (recall@5 0.08 on the Chinese set of
#: bench/knowledge, against 0.98 for BM25 + jieba): queries that are mostly Chinese
#: are answered by the lexical list alone rather than diluted by a near-random one
DENSE_MAX_CJK_SHARE = 0.3
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"\w")
CANDIDATES = 100  # per list, like Bailian's DenseSimilarityTopK / SparseSimilarityTopK defaults


@dataclass(frozen=True)
class Filters:
    file_ids: frozenset[str] | None = None
    tags: frozenset[str] | None = None
    metadata: dict[str, Any] | None = None
    structured: dict[str, Any] | None = None


@dataclass(frozen=True)
class Hit:
    kb_id: str
    chunk_id: int
    doc_id: str
    doc_name: str
    title: str
    text: str
    pages: list[int]
    score: float
    fields: dict[str, Any] | None = None


@dataclass
class Snapshot:
    revision: int
    embedder: str
    chunk_ids: list[int] = field(default_factory=list)
    file_ids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    pages: list[list[int]] = field(default_factory=list)
    fields: list[dict[str, Any] | None] = field(default_factory=list)
    files: dict[str, KbFile] = field(default_factory=dict)
    lexical: LexicalIndex | None = None
    vectors: np.ndarray | None = None

    def mask(self, f: Filters) -> np.ndarray:
        keep = np.ones(len(self.chunk_ids), dtype=bool)
        if f.file_ids is not None:
            keep &= np.array([fid in f.file_ids for fid in self.file_ids], dtype=bool)
        if f.tags:
            keep &= np.array([bool(f.tags & set(self.files[fid].tags or [])) for fid in self.file_ids], dtype=bool)
        if f.metadata:
            keep &= np.array([all(str((self.files[fid].meta or {}).get(k)) == str(v) for k, v in f.metadata.items()) for fid in self.file_ids], dtype=bool)
        if f.structured:  # several pairs are a union (Bailian)
            keep &= np.array([row is not None and any(str(row.get(k)) == str(v) for k, v in f.structured.items()) for row in self.fields], dtype=bool)
        return keep


class Retriever:
    """Per-process cache of knowledge-base snapshots."""

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.Lock()

    def snapshot(self, s: Session, kb: KnowledgeBase) -> Snapshot:
        snap = self._snapshots.get(kb.id)
        if snap is not None and snap.revision == kb.revision:
            return snap
        with self._lock:
            snap = self._snapshots.get(kb.id)
            if snap is None or snap.revision != kb.revision:
                snap = self._snapshots[kb.id] = _build(s, kb)
        return snap

    def retrieve(self, s: Session, kbs: list[KnowledgeBase], query: str, *, top_k: int = 5, threshold: float = 0.0, filters: Filters = Filters()) -> list[Hit]:
        lists: list[list[tuple[str, int]]] = []
        lists_per_kb: dict[str, int] = {}
        snaps = {kb.id: self.snapshot(s, kb) for kb in kbs}
        vectors: dict[str, np.ndarray] = {}
        letters = len(_LETTER.findall(query)) or 1
        use_dense = len(_CJK.findall(query)) / letters <= DENSE_MAX_CJK_SHARE
        for kb in kbs:
            snap = snaps[kb.id]
            if not snap.chunk_ids:
                continue
            keep = snap.mask(filters)
            if not keep.any():
                continue
            assert snap.lexical is not None
            lex = np.where(keep, snap.lexical.scores(query), 0.0)
            lists.append([(kb.id, int(i)) for i in _top(lex, CANDIDATES) if lex[i] > 0])
            lists_per_kb[kb.id] = 1
            if snap.vectors is not None and use_dense:
                lists_per_kb[kb.id] = 2
                if snap.embedder not in vectors:
                    embedder = get_embedder(snap.embedder)
                    assert embedder is not None
                    vectors[snap.embedder] = embedder.embed([query])[0]
                dense = np.where(keep, snap.vectors @ vectors[snap.embedder], -np.inf)
                lists.append([(kb.id, int(i)) for i in _top(dense, CANDIDATES) if np.isfinite(dense[i])])
        fused: dict[tuple[str, int], float] = {}
        for ranked in lists:
            for rank, key in enumerate(ranked):
                fused[key] = fused.get(key, 0.0) + 1.0 / (RRF_K + rank + 1)
        # a chunk can only be in its own knowledge base's lists: normalise by those
        normed = {key: score * (RRF_K + 1) / lists_per_kb[key[0]] for key, score in fused.items()}
        hits = []
        for (kb_id, i), norm in sorted(normed.items(), key=lambda kv: -kv[1]):
            if norm < threshold:
                break
            snap = snaps[kb_id]
            f = snap.files[snap.file_ids[i]]
            hits.append(Hit(kb_id, snap.chunk_ids[i], f.id, f.name, snap.titles[i], snap.texts[i], snap.pages[i], round(norm, 6), snap.fields[i]))
            if len(hits) >= top_k:
                break
        return hits


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    if len(scores) <= k:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def _build(s: Session, kb: KnowledgeBase) -> Snapshot:
    snap = Snapshot(revision=kb.revision, embedder=kb.embedder)
    files = {f.id: f for f in s.scalars(select(KbFile).where(KbFile.kb_id == kb.id))}
    rows = s.execute(
        select(KbChunk.id, KbChunk.file_id, KbChunk.title, KbChunk.text, KbChunk.pages, KbChunk.fields, KbChunk.vector, KbChunk.tokens)
        .where(KbChunk.kb_id == kb.id, KbChunk.enabled.is_(True))
        .order_by(KbChunk.file_id, KbChunk.seq)
    ).all()
    vecs = []
    tokens = []
    for cid, fid, title, text, pages, fields, vector, toks in rows:
        if fid not in files:
            continue
        snap.chunk_ids.append(cid)
        snap.file_ids.append(fid)
        snap.titles.append(title)
        snap.texts.append(text)
        snap.pages.append(list(pages or []))
        snap.fields.append(fields)
        vecs.append(vector)
        tokens.append(toks if toks is not None else chunk_tokens(title, text))
    snap.files = files
    snap.lexical = LexicalIndex(tokens)
    if vecs and all(v is not None for v in vecs):
        snap.vectors = np.ascontiguousarray(np.stack([np.frombuffer(v, dtype=np.float32) for v in vecs]))
    return snap
