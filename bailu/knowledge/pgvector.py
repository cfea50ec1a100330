"""Dense search in PostgreSQL with pgvector, where the database has it.

Migration 0004 adds ``kb_chunks.embedding`` (type ``vector``) when the server offers the
extension. Then every chunk's vector is written there too (the float32 bytes in
``kb_chunks.vector`` stay the portable copy), snapshots leave the vectors in the database,
and the dense list of a query is one inner-product search (``<#>``; the vectors are
L2-normalised, so it orders as cosine does).

Exact search reads every vector of the knowledge base (kept in the row, migration 0006):
fine for small ones. A knowledge base of ``HNSW_MIN_CHUNKS`` chunks or more gets an HNSW
index of its own, a partial index on ``embedding::vector(DIM)`` for ``kb_id = <id>``
(pgvector indexes fixed dimensions only; the column holds any), built ``CONCURRENTLY``
after the indexing job that crossed the mark; unfiltered queries then use it
(``hnsw.ef_search`` = ``EF_SEARCH``, iterative scans on so disabled chunks are skipped
rather than missed); filtered queries stay exact over the chunks the filters keep.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from bailu.store.db import Database

HNSW_MIN_CHUNKS = 20_000
EF_SEARCH = 100
INDEX_BUILD_MEMORY = "512MB"  # maintenance_work_mem for the build's session only
_INDEX_PREFIX = "kb_chunks_hnsw_"

_state: weakref.WeakKeyDictionary[Engine, tuple[bool, tuple[int, ...]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _probe(s: Session) -> tuple[bool, tuple[int, ...]]:
    """(whether kb_chunks.embedding exists, pgvector's version), once per engine."""
    engine = s.get_bind()
    assert isinstance(engine, Engine)
    if engine not in _state:
        found = False
        version: tuple[int, ...] = ()
        if engine.dialect.name == "postgresql":
            found = s.execute(text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = 'kb_chunks' AND column_name = 'embedding'"
            )).first() is not None
            raw = s.scalar(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")) or ""
            version = tuple(int(p) for p in raw.split(".") if p.isdigit())
        with _lock:
            _state[engine] = (found, version)
    return _state[engine]


def enabled(s: Session) -> bool:
    return _probe(s)[0]


def ann_supported(s: Session) -> bool:
    """HNSW indexes need pgvector 0.5; skipping disabled chunks during a scan (iterative
    scans) 0.8. Older versions keep exact search at every size."""
    found, version = _probe(s)
    return found and version >= (0, 8)


def literal(vector: bytes | np.ndarray) -> str:
    """pgvector's text form; float32 values printed exactly (repr of the widened value)."""
    values = np.frombuffer(vector, dtype=np.float32) if isinstance(vector, bytes) else vector.astype(np.float32)
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def write(s: Session, rows: Iterable[tuple[int, bytes | None]]) -> None:
    """Copy chunks' vectors (``(chunk id, float32 bytes)``) into the embedding column."""
    params = [{"id": cid, "v": literal(vec) if vec is not None else None} for cid, vec in rows]
    if params:
        s.execute(text("UPDATE kb_chunks SET embedding = CAST(:v AS vector) WHERE id = :id"), params)


def _index(s: Session, kb_id: str) -> tuple[str, int, bool] | None:
    """The knowledge base's HNSW index: (name, dimension, valid), if there is one."""
    row = s.execute(text(
        "SELECT c.relname, i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname LIKE :pattern"
    ), {"pattern": f"{_INDEX_PREFIX}{kb_id}\\_%"}).first()
    return (str(row[0]), int(str(row[0]).rsplit("_", 1)[1]), bool(row[1])) if row else None


def hnsw_dimension(s: Session, kb_id: str) -> int | None:
    """The dimension of the knowledge base's HNSW index, if it has a valid one."""
    index = _index(s, kb_id)
    return index[1] if index and index[2] and ann_supported(s) else None


def stored_dimension(s: Session, kb_id: str) -> int | None:
    """The dimension of the knowledge base's stored embeddings; -1 when they are of several
    (its embedder changed and not every file was re-added)."""
    dims = list(s.scalars(text("SELECT DISTINCT vector_dims(embedding) FROM kb_chunks WHERE kb_id = :kb AND embedding IS NOT NULL"), {"kb": kb_id}))
    return -1 if len(dims) > 1 else (int(dims[0]) if dims else None)


def _autocommit(db: Database, *statements: str) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        try:
            for sql in statements:
                conn.execute(text(sql))
        finally:
            conn.execute(text("RESET maintenance_work_mem"))  # the connection goes back to the pool


def drop_index_unless(db: Database, kb_id: str, dimension: int) -> None:
    """Before vectors of another dimension are stored (the embedder changed): the knowledge
    base's index, whose cast to ``vector(DIM)`` would refuse them, is dropped."""
    with db.read() as s:
        index = _index(s, kb_id) if enabled(s) else None
    if index is not None and index[1] != dimension:
        _autocommit(db, f"DROP INDEX CONCURRENTLY IF EXISTS {index[0]}")


def drop_index(db: Database, kb_id: str) -> None:
    """The knowledge base's HNSW index, if any (the knowledge base is being deleted)."""
    with db.read() as s:
        index = _index(s, kb_id) if enabled(s) else None
    if index is not None:
        _autocommit(db, f"DROP INDEX CONCURRENTLY IF EXISTS {index[0]}")


def maybe_index(db: Database, kb_id: str) -> bool:
    """Build the knowledge base's HNSW index once it has ``HNSW_MIN_CHUNKS`` vectors; returns
    whether one was built. Outside any transaction (``CONCURRENTLY``: writes go on meanwhile)."""
    if not kb_id.isalnum():  # ids are 10 lowercase alphanumerics: safe in the index's name and predicate
        return False
    with db.read() as s:
        if not ann_supported(s):
            return False
        index = _index(s, kb_id)
        if index is not None and index[2]:
            return False
        count = s.scalar(text("SELECT count(*) FROM kb_chunks WHERE kb_id = :kb AND embedding IS NOT NULL"), {"kb": kb_id}) or 0
        if count < HNSW_MIN_CHUNKS:
            return False
        dim = stored_dimension(s, kb_id)
    if dim is None or dim < 0:
        return False
    name = f"{_INDEX_PREFIX}{kb_id}_{dim}"
    statements = [f"SET maintenance_work_mem = '{INDEX_BUILD_MEMORY}'"]  # the graph built in memory (~200 MB at 100k × 384)
    if index is not None:  # an invalid one, left by a failed build
        statements.append(f"DROP INDEX CONCURRENTLY IF EXISTS {index[0]}")
    statements.append(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON kb_chunks USING hnsw ((embedding::vector({dim})) vector_ip_ops)"
        f" WHERE kb_id = '{kb_id}'"
    )
    _autocommit(db, *statements)
    return True


def nearest(s: Session, kb_id: str, query: np.ndarray, limit: int, only: Sequence[int] | None = None,
            hnsw_dim: int | None = None) -> list[tuple[int, float]]:
    """The ``limit`` enabled chunks of ``kb_id`` most similar to ``query``: (chunk id, cosine).
    Through the knowledge base's HNSW index when ``hnsw_dim`` is given and nothing is filtered."""
    if hnsw_dim is not None and only is None and len(query) == hnsw_dim:
        s.execute(text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, limit)}"))
        s.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        cast = f"vector({hnsw_dim})"
        rows = s.execute(text(
            f"SELECT id, -((embedding::{cast}) <#> CAST(:q AS {cast})) AS sim FROM kb_chunks"
            f" WHERE kb_id = :kb AND enabled ORDER BY (embedding::{cast}) <#> CAST(:q AS {cast}) LIMIT :limit"
        ), {"q": literal(query), "kb": kb_id, "limit": limit})
        return sorted(((int(cid), float(sim)) for cid, sim in rows), key=lambda t: -t[1])  # relaxed order: re-sorted
    sql = (
        "SELECT id, -(embedding <#> CAST(:q AS vector)) AS sim FROM kb_chunks"
        " WHERE kb_id = :kb AND enabled AND vector_dims(embedding) = :dim"  # rows of another dimension cannot be compared
        + (" AND id = ANY(:only)" if only is not None else "")
        + " ORDER BY embedding <#> CAST(:q AS vector) LIMIT :limit"
    )
    params: dict[str, object] = {"q": literal(query), "kb": kb_id, "limit": limit, "dim": len(query)}
    if only is not None:
        params["only"] = list(only)
    return [(int(cid), float(sim)) for cid, sim in s.execute(text(sql), params)]
