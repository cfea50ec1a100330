"""Hybrid retrieval: BM25 and dense vectors, fused by standardised scores, filtered, cut.

Each knowledge base is held in memory as one snapshot per revision: its enabled
chunks, a BM25 index and a contiguous float32 matrix of their vectors (exact
search: one matrix-vector product). A change to the knowledge base bumps its
revision and the next query rebuilds the snapshot.

Fusion (bench/knowledge, docs/performance-knowledge.md): each list (lexical, dense) keeps
its best ``max(10, 2 × top_k)`` candidates; a candidate's score in a list is standardised
against that list's candidates (z = (s − mean) / std); a chunk missing from the lexical
list scores as BM25 0 would (no query word at all), one missing from the dense list as
the list's last candidate. The fused score is the mean of the two z-scores, so a chunk
far ahead in one list and absent from the other is not beaten by chunks that are
mediocre in both — what rank fusion (RRF) did: on the English retrieval set it lost a
fifth of the lexical list's hits. With MiniLM, mostly-Chinese queries use the lexical
list alone (it cannot separate Chinese texts). The reported score is ``1 / (1 + e^−z)``: 0.5 for
a typical candidate, 0.88 two standard deviations above; knowledge bases are
standardised separately, so scores of several compare on one scale. The similarity
threshold applies to that score (or to the reranker's, when one is configured).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import null, select
from sqlalchemy.orm import Session

from bailu.errors import ModelServiceFailed
from bailu.knowledge import pgvector
from bailu.knowledge.embedders import DEFAULT_EMBEDDER, Embedders
from bailu.knowledge.lexical import LexicalIndex, chunk_tokens
from bailu.knowledge.rerankers import Rerankers
from bailu.store.tables import KbChunk, KbFile, KnowledgeBase

log = logging.getLogger("bailu.knowledge")
#: MiniLM barely separates Chinese texts (recall@5 0.08 on the Chinese set of
#: bench/knowledge, against 0.98 for BM25 + jieba): with it, queries that are mostly Chinese
#: are answered by the lexical list alone rather than diluted by a near-random one.
#: Configured embedders (DashScope's text-embedding, bge-m3, ...) are taken as multilingual.
ENGLISH_ONLY_EMBEDDERS = frozenset({DEFAULT_EMBEDDER})
DENSE_MAX_CJK_SHARE = 0.3
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"\w")
MIN_CANDIDATES = 10  # per list; 2 × top_k when that is more
#: a knowledge base this large is rebuilt in the background after a change (~1 s per 10k
#: chunks), its previous snapshot answering meanwhile; smaller ones are rebuilt at once
BACKGROUND_REBUILD_MIN = 20_000


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
    vectors: np.ndarray | None = None  # in process; None when there are none or they are in pgvector
    dense_in_db: bool = False  # the dense list comes from pgvector (bailu.knowledge.pgvector)
    hnsw_dim: int | None = None  # ... through the knowledge base's HNSW index of this dimension
    dim: int | None = None  # the stored vectors' dimension
    index: dict[int, int] = field(default_factory=dict)  # chunk id -> position

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
    """Per-process cache of knowledge-base snapshots, and the search over them."""

    def __init__(self, embedders: Embedders | None = None, rerankers: Rerankers | None = None) -> None:
        self.embedders = embedders or Embedders()
        self.rerankers = rerankers or Rerankers()
        self._snapshots: dict[str, Snapshot] = {}
        self._locks: dict[str, threading.Lock] = {}  # one per knowledge base: a rebuild holds up only its own queries
        self._locks_lock = threading.Lock()
        self._failed: dict[str, int] = {}  # knowledge base -> revision whose background rebuild failed

    def snapshot(self, s: Session, kb: KnowledgeBase) -> Snapshot:
        """The knowledge base's snapshot at its current revision — or, for a large one whose
        rebuild is under way in the background, the previous snapshot (``revision`` older than
        the knowledge base's; :meth:`retrieve` then drops chunks deleted or disabled since)."""
        snap = self._snapshots.get(kb.id)
        if snap is not None and snap.revision == kb.revision:
            return snap
        with self._locks_lock:
            lock = self._locks.setdefault(kb.id, threading.Lock())
        if snap is not None and len(snap.chunk_ids) >= BACKGROUND_REBUILD_MIN and self._failed.get(kb.id) != kb.revision:
            self._rebuild_in_background(s, kb, snap, lock)
            return snap
        with lock:  # (after a failed background rebuild, here too: its error reaches the caller)
            snap = self._snapshots.get(kb.id)
            if snap is None or snap.revision != kb.revision:
                snap = self._snapshots[kb.id] = _build(s, kb)
                self._failed.pop(kb.id, None)
        return snap

    def _rebuild_in_background(self, s: Session, kb: KnowledgeBase, old: Snapshot, lock: threading.Lock) -> None:
        if not lock.acquire(blocking=False):  # one rebuild at a time; the next query after it starts another if needed
            return
        engine, kb_id, revision = s.get_bind(), kb.id, kb.revision

        def rebuild() -> None:
            try:
                with Session(engine) as own:
                    current = own.get(KnowledgeBase, kb_id)
                    new = _build(own, current) if current is not None else None
                with self._locks_lock:
                    if new is not None and self._snapshots.get(kb_id) is old:  # not forgotten (deleted) meanwhile
                        self._snapshots[kb_id] = new
            except Exception:  # noqa: BLE001 - the next query rebuilds in its own thread, and sees the error
                log.exception("rebuilding the index of knowledge base %s failed", kb_id)
                self._failed[kb_id] = revision
            finally:
                lock.release()

        try:
            threading.Thread(target=rebuild, name=f"kb-rebuild-{kb_id}", daemon=True).start()
        except BaseException:
            lock.release()
            raise

    def forget(self, kb_id: str) -> None:
        """Drop a deleted knowledge base's snapshot."""
        with self._locks_lock:
            self._snapshots.pop(kb_id, None)
            self._locks.pop(kb_id, None)
            self._failed.pop(kb_id, None)

    def prune(self, existing: set[str]) -> None:
        """Forget the snapshots of knowledge bases that no longer exist (deleted by another process)."""
        for kb_id in set(self._snapshots) - existing:
            self.forget(kb_id)

    def retrieve(self, s: Session, kbs: list[KnowledgeBase], query: str, *, top_k: int = 5, threshold: float = 0.0, filters: Filters = Filters(),
                 context: str = "") -> list[Hit]:
        """The best chunks for ``query`` across ``kbs``. ``context``: the conversation's previous
        question, so that a follow-up ("它多少钱？") finds what the conversation is about; it weighs
        half as much as the query in the lexical list and precedes it in the embedded text."""
        snaps = {kb.id: self.snapshot(s, kb) for kb in kbs}
        vectors: dict[str, np.ndarray] = {}
        letters = len(_LETTER.findall(query)) or 1
        mostly_cjk = len(_CJK.findall(query + context)) / (letters + len(_LETTER.findall(context))) > DENSE_MAX_CJK_SHARE
        candidates = max(MIN_CANDIDATES, 2 * top_k)
        fused: list[tuple[float, str, int]] = []
        for kb in kbs:
            snap = snaps[kb.id]
            if not snap.chunk_ids:
                continue
            keep = snap.mask(filters)
            if not keep.any():
                continue
            assert snap.lexical is not None
            lex = np.where(keep, snap.lexical.scores(query, context), 0.0)
            lists = [_standardised(lex, [int(i) for i in _top(lex, candidates) if lex[i] > 0], floor=0.0)]
            if (snap.vectors is not None or snap.dense_in_db) and not (mostly_cjk and snap.embedder in ENGLISH_ONLY_EMBEDDERS):
                if snap.embedder not in vectors:
                    embedder = self.embedders.get(snap.embedder)
                    assert embedder is not None
                    if getattr(embedder, "remote", False):
                        _release(s)
                    vectors[snap.embedder] = embedder.embed([f"{context}\n{query}" if context else query])[0]
                if snap.dim == -1:
                    raise ModelServiceFailed(f"Knowledge base '{kb.id}' holds vectors of different dimensions (its embedder changed): re-add its files.")
                if snap.dim is not None and snap.dim != len(vectors[snap.embedder]):
                    raise ModelServiceFailed(
                        f"Knowledge base '{kb.id}' holds {snap.dim}-dimensional vectors but its embedder "
                        f"'{snap.embedder}' now returns {len(vectors[snap.embedder])}: re-add its files, or restore the embedder's settings."
                    )
                if snap.vectors is not None:
                    dense = np.where(keep, snap.vectors @ vectors[snap.embedder], -np.inf)
                else:
                    dense = _dense_in_db(s, kb.id, snap, vectors[snap.embedder], keep, candidates)
                lists.append(_standardised(dense, [int(i) for i in _top(dense, candidates) if np.isfinite(dense[i])], floor=None))
            union = sorted({i for z, _ in lists for i in z})
            zs = [sum(scores.get(i, missing) for scores, missing in lists) / len(lists) for i in union]
            if kb.reranker and union:
                _release(s)
                reranked = self.rerankers.get(kb.reranker).rerank(query, [f"{snap.titles[i]}\n{snap.texts[i]}" for i in union])
                fused += [(score, kb.id, i) for score, i in zip(reranked, union, strict=True)]
            else:
                fused += [(1.0 / (1.0 + math.exp(-z)), kb.id, i) for z, i in zip(zs, union, strict=True)]
        stale = {kb.id for kb in kbs if snaps[kb.id].revision != kb.revision}
        gone = _gone(s, [snaps[kb_id].chunk_ids[i] for _, kb_id, i in fused if kb_id in stale]) if stale else set()
        hits = []
        for score, kb_id, i in sorted(fused, key=lambda t: -t[0]):
            if score < threshold:
                break
            snap = snaps[kb_id]
            if snap.chunk_ids[i] in gone:
                continue
            f = snap.files[snap.file_ids[i]]
            hits.append(Hit(kb_id, snap.chunk_ids[i], f.id, f.name, snap.titles[i], snap.texts[i], snap.pages[i], round(score, 6), snap.fields[i]))
            if len(hits) >= top_k:
                break
        return hits


def _gone(s: Session, chunk_ids: list[int]) -> set[int]:
    """Of these chunks (from a stale snapshot), the ones deleted or disabled since."""
    live = set(s.scalars(select(KbChunk.id).where(KbChunk.id.in_(chunk_ids), KbChunk.enabled.is_(True))))
    return set(chunk_ids) - live


def _release(s: Session) -> None:
    """Before a call to a remote endpoint: end the (read) session's transaction, so that its
    pooled connection is not held idle while the endpoint answers. The session goes on being
    usable (objects are not expired on commit); one with pending changes is left alone."""
    if s.in_transaction() and not (s.new or s.dirty or s.deleted):
        s.commit()


def _dense_in_db(s: Session, kb_id: str, snap: Snapshot, query: np.ndarray, keep: np.ndarray, limit: int) -> np.ndarray:
    """The dense list from pgvector, as a score array over the snapshot (-inf: not a candidate)."""
    only = None if keep.all() else [snap.chunk_ids[i] for i in np.flatnonzero(keep)]
    dense = np.full(len(snap.chunk_ids), -np.inf, dtype=np.float32)
    for chunk_id, sim in pgvector.nearest(s, kb_id, query, limit, only, snap.hnsw_dim):
        i = snap.index.get(chunk_id)
        if i is not None:  # a chunk changed since the snapshot was built is left out until the next
            dense[i] = sim
    return dense


def _standardised(scores: np.ndarray, ranked: list[int], *, floor: float | None) -> tuple[dict[int, float], float]:
    """z-scores of a list's candidates, and the z of a chunk not in it: that of ``floor`` (the
    score every other chunk has, BM25's 0) or, with no floor, of the list's last candidate."""
    if not ranked:
        return {}, 0.0
    values = scores[ranked].astype(np.float64)
    mean, std = float(values.mean()), float(values.std())
    if std < 1e-9:  # one candidate, or all alike: ahead of the rest by one unit
        return {i: 1.0 for i in ranked}, (-1.0 if floor is not None else 0.0)
    z = (values - mean) / std
    missing = (floor - mean) / std if floor is not None else float(z[-1])
    return dict(zip(ranked, z.tolist(), strict=True)), missing


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    if len(scores) <= k:
        return np.argsort(-scores, kind="stable")
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part], kind="stable")]


def _build(s: Session, kb: KnowledgeBase) -> Snapshot:
    snap = Snapshot(revision=kb.revision, embedder=kb.embedder)
    snap.dense_in_db = kb.embedder != "none" and pgvector.enabled(s)
    if snap.dense_in_db:
        snap.hnsw_dim = pgvector.hnsw_dimension(s, kb.id)
        snap.dim = pgvector.stored_dimension(s, kb.id)
    files = {f.id: f for f in s.scalars(select(KbFile).where(KbFile.kb_id == kb.id))}
    vector_column = null().label("vector") if snap.dense_in_db else KbChunk.vector
    rows = s.execute(
        select(KbChunk.id, KbChunk.file_id, KbChunk.title, KbChunk.text, KbChunk.pages, KbChunk.fields, vector_column, KbChunk.tokens)
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
    snap.index = {cid: i for i, cid in enumerate(snap.chunk_ids)}
    snap.lexical = LexicalIndex(tokens)
    if not snap.dense_in_db and vecs and all(v is not None for v in vecs):
        if len({len(v) for v in vecs}) > 1:
            raise ModelServiceFailed(f"Knowledge base '{kb.id}' holds vectors of different dimensions (its embedder changed): re-add its files.")
        snap.vectors = np.ascontiguousarray(np.stack([np.frombuffer(v, dtype=np.float32) for v in vecs]))
        snap.dim = int(snap.vectors.shape[1])
    return snap
