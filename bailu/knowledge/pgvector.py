"""Dense search in PostgreSQL with pgvector, where the database has it.

Migration 0004 adds ``kb_chunks.embedding`` (type ``vector``) when the server offers the
extension. Then every chunk's vector is written there too (the float32 bytes in
``kb_chunks.vector`` stay the portable copy), snapshots leave the vectors in the database,
and the dense list of a query is one exact inner-product search (``<#>``; the vectors are
L2-normalised, so it orders as cosine does) restricted to the chunks the filters keep.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence

import numpy as np
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

_enabled: weakref.WeakKeyDictionary[Engine, bool] = weakref.WeakKeyDictionary()  # whether kb_chunks.embedding exists
_lock = threading.Lock()


def enabled(s: Session) -> bool:
    engine = s.get_bind()
    assert isinstance(engine, Engine)
    key = engine
    if key not in _enabled:
        found = False
        if engine.dialect.name == "postgresql":
            found = s.execute(text(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
                " AND table_name = 'kb_chunks' AND column_name = 'embedding'"
            )).first() is not None
        with _lock:
            _enabled[key] = found
    return _enabled[key]


def literal(vector: bytes | np.ndarray) -> str:
    """pgvector's text form; float32 values printed exactly (repr of the widened value)."""
    values = np.frombuffer(vector, dtype=np.float32) if isinstance(vector, bytes) else vector.astype(np.float32)
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def write(s: Session, rows: Iterable[tuple[int, bytes | None]]) -> None:
    """Copy chunks' vectors (``(chunk id, float32 bytes)``) into the embedding column."""
    params = [{"id": cid, "v": literal(vec) if vec is not None else None} for cid, vec in rows]
    if params:
        s.execute(text("UPDATE kb_chunks SET embedding = CAST(:v AS vector) WHERE id = :id"), params)


def nearest(s: Session, kb_id: str, query: np.ndarray, limit: int, only: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """The ``limit`` enabled chunks of ``kb_id`` most similar to ``query``: (chunk id, cosine)."""
    sql = (
        "SELECT id, -(embedding <#> CAST(:q AS vector)) AS sim FROM kb_chunks"
        " WHERE kb_id = :kb AND enabled AND embedding IS NOT NULL"
        + (" AND id = ANY(:only)" if only is not None else "")
        + " ORDER BY embedding <#> CAST(:q AS vector) LIMIT :limit"
    )
    params: dict[str, object] = {"q": literal(query), "kb": kb_id, "limit": limit}
    if only is not None:
        params["only"] = list(only)
    return [(int(cid), float(sim)) for cid, sim in s.execute(text(sql), params)]
