"""Knowledge-base storage: plain functions over a SQLAlchemy session.

Ids in Bailian's shapes: knowledge bases (``pipeline_id``) are 10 lowercase
alphanumerics, files ``file_<32 hex>_<8 digits>``, jobs 32 hex digits.
Uploaded bytes live in ``DATA_DIR/files/``.
"""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from bailu.knowledge import pgvector
from bailu.store.tables import KbChunk, KbFile, KbJob, KnowledgeBase
from bailu.store.workspaces import now

_ALNUM = string.ascii_lowercase + string.digits
STALE_JOB = timedelta(seconds=60)  # a RUNNING job without a heartbeat for this long has crashed


def no_nul(text: str) -> str:
    """Text without NUL characters, which PostgreSQL's text type cannot hold (some PDFs carry them)."""
    return text.replace("\x00", "")


def new_kb_id() -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(10))


def new_file_id() -> str:
    return f"file_{uuid.uuid4().hex}_{secrets.randbelow(10**8):08d}"


def file_path(data_dir: Path, file_id: str, name: str) -> Path:
    """Where an upload's bytes live: named by its id; the suffix only if it is a plain one."""
    suffix = Path(name).suffix.lower()
    safe = suffix if suffix[1:].isalnum() and len(suffix) <= 9 else ""
    return data_dir / "files" / f"{file_id}{safe}"


def create_kb(s: Session, workspace_id: str, name: str, *, chunk_size: int, overlap: int, structured: bool, embedder: str, description: str = "",
              reranker: str | None = None) -> KnowledgeBase:
    kb = KnowledgeBase(
        id=new_kb_id(), workspace_id=workspace_id, name=name, description=description,
        structure_type="structured" if structured else "unstructured",
        chunk_size=chunk_size, overlap=overlap, embedder=embedder, reranker=reranker, revision=0, created_at=now(),
    )
    s.add(kb)
    s.flush()
    return kb


def get_kb(s: Session, workspace_id: str, kb_id: str) -> KnowledgeBase | None:
    """A knowledge base of this workspace; another workspace's looks the same as none."""
    kb = s.get(KnowledgeBase, kb_id)
    return kb if kb is not None and kb.workspace_id == workspace_id else None


def find_kb(s: Session, workspace_id: str, id_or_name: str) -> KnowledgeBase | None:
    return get_kb(s, workspace_id, id_or_name) or s.scalar(
        select(KnowledgeBase).where(KnowledgeBase.workspace_id == workspace_id, KnowledgeBase.name == id_or_name)
    )


def list_kbs(s: Session, workspace_id: str) -> list[KnowledgeBase]:
    return list(s.scalars(select(KnowledgeBase).where(KnowledgeBase.workspace_id == workspace_id).order_by(KnowledgeBase.created_at)))


def add_file(s: Session, kb: KnowledgeBase, name: str, size: int, sha256: str, tags: list[str], meta: dict[str, Any], *, file_id: str | None = None) -> KbFile:
    ts = now()
    f = KbFile(
        id=file_id or new_file_id(), workspace_id=kb.workspace_id, kb_id=kb.id, name=name[:300], file_type=Path(name).suffix.lower().lstrip(".")[:16],
        size=size, sha256=sha256, tags=tags, meta=meta, status="INIT", index_status="RUNNING", message="",
        created_at=ts, updated_at=ts,
    )
    s.add(f)
    s.flush()
    return f


def get_file(s: Session, workspace_id: str, file_id: str) -> KbFile | None:
    f = s.get(KbFile, file_id)
    return f if f is not None and f.workspace_id == workspace_id else None


def foreign_file(s: Session, workspace_id: str, file_ids: Sequence[str], kb_ids: Sequence[str]) -> str | None:
    """The first of ``file_ids`` that is not a file of one of ``kb_ids`` (in this workspace), if any."""
    for file_id in file_ids:
        f = get_file(s, workspace_id, file_id)
        if f is None or f.kb_id not in kb_ids:
            return file_id
    return None


def list_files(s: Session, kb_id: str) -> list[KbFile]:
    return list(s.scalars(select(KbFile).where(KbFile.kb_id == kb_id).order_by(KbFile.created_at, KbFile.id)))


def set_file_status(s: Session, file_id: str, status: str | None = None, index_status: str | None = None, message: str | None = None) -> None:
    values: dict[str, Any] = {"updated_at": now()}
    if status is not None:
        values["status"] = status
    if index_status is not None:
        values["index_status"] = index_status
    if message is not None:
        values["message"] = message[:2000]
    s.execute(update(KbFile).where(KbFile.id == file_id).values(**values))


def bump_revision(s: Session, kb_id: str) -> None:
    s.execute(update(KnowledgeBase).where(KnowledgeBase.id == kb_id).values(revision=KnowledgeBase.revision + 1))


def replace_chunks(s: Session, kb_id: str, file_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """A file's chunks, all at once (re-running a job replaces rather than duplicates)."""
    s.execute(delete(KbChunk).where(KbChunk.file_id == file_id))
    chunks = [KbChunk(kb_id=kb_id, file_id=file_id, seq=i, **row) for i, row in enumerate(rows)]
    s.add_all(chunks)
    if pgvector.enabled(s):
        s.flush()
        pgvector.write(s, [(c.id, c.vector) for c in chunks if c.vector is not None])
    bump_revision(s, kb_id)


def delete_file(s: Session, f: KbFile) -> None:
    """The file and its chunks, from every index (the caller removes the bytes)."""
    s.execute(delete(KbChunk).where(KbChunk.file_id == f.id))
    bump_revision(s, f.kb_id)
    s.delete(f)


def delete_kb(s: Session, kb: KnowledgeBase) -> list[KbFile]:
    """The knowledge base with its files, chunks and jobs; returns the files (the caller removes their bytes)."""
    files = list_files(s, kb.id)
    s.execute(delete(KbChunk).where(KbChunk.kb_id == kb.id))
    s.execute(delete(KbJob).where(KbJob.kb_id == kb.id))
    s.execute(delete(KbFile).where(KbFile.kb_id == kb.id))
    s.execute(delete(KnowledgeBase).where(KnowledgeBase.id == kb.id))
    return files


def create_job(s: Session, kb: KnowledgeBase, file_ids: list[str]) -> KbJob:
    ts = now()
    job = KbJob(id=uuid.uuid4().hex, workspace_id=kb.workspace_id, kb_id=kb.id, file_ids=file_ids, status="PENDING", message="", created_at=ts, updated_at=ts)
    s.add(job)
    s.flush()
    return job


def claim_job(s: Session, job_id: str) -> bool:
    """PENDING → RUNNING, atomically: only one worker (server or CLI) gets it."""
    ts = now()
    result = s.execute(
        update(KbJob).where(KbJob.id == job_id, KbJob.status == "PENDING").values(status="RUNNING", heartbeat_at=ts, updated_at=ts)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def pending_jobs(s: Session) -> list[str]:
    return list(s.scalars(select(KbJob.id).where(KbJob.status == "PENDING").order_by(KbJob.created_at)))


def recover_stale_jobs(s: Session) -> int:
    """RUNNING jobs whose worker stopped beating (a crash) go back to PENDING and resume."""
    cutoff = now() - STALE_JOB
    result = s.execute(
        update(KbJob)
        .where(KbJob.status == "RUNNING", (KbJob.heartbeat_at.is_(None)) | (KbJob.heartbeat_at < cutoff))
        .values(status="PENDING", message="resumed after an interrupted run", updated_at=now())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
