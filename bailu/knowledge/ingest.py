"""Indexing jobs: parse → chunk → embed → store, with Bailian's status values.

File: ``INIT`` → ``PARSING`` → ``PARSE_SUCCESS`` | ``PARSE_FAILED``; its place in the
index: ``RUNNING`` → ``FINISH`` | ``INSERT_ERROR``. Job: ``PENDING`` → ``RUNNING`` →
``COMPLETED`` (per-file failures are on the files) | ``FAILED`` (the job itself broke).

A job is claimed atomically, so the server's worker and ``bailu kb add --wait`` never
run one twice; it beats a heartbeat while it runs, and a RUNNING job whose heartbeat
stopped (a crash) is put back to PENDING and resumes — each file's chunks are
replaced, never duplicated. A corrupt or unsupported file fails alone, with its reason.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import update

from bailu.errors import BailuError
from bailu.knowledge import pgvector
from bailu.knowledge import store as kb_store
from bailu.knowledge.chunking import chunk_blocks
from bailu.knowledge.embedders import Embedders
from bailu.knowledge.lexical import chunk_tokens
from bailu.knowledge.parsing import ParseError, parse
from bailu.store.db import Database
from bailu.store.tables import KbFile, KbJob, KnowledgeBase
from bailu.store.workspaces import now

log = logging.getLogger("bailu.knowledge")
HEARTBEAT_SECONDS = 10.0  # well under kb_store.STALE_JOB
EMBED_BATCH = 512  # chunks of several files embedded in one call


def run_job(db: Database, data_dir: Path, job_id: str, embedders: Embedders | None = None) -> bool:
    """Run one job if it is still PENDING; returns whether this call ran it."""
    embedders = embedders or Embedders()
    with db.write() as s:
        if not kb_store.claim_job(s, job_id):
            return False
        job = s.get(KbJob, job_id)
        assert job is not None
        kb = s.get(KnowledgeBase, job.kb_id)
        file_ids = list(job.file_ids)
    beating = threading.Event()

    def heartbeat() -> None:  # proves the job alive while one large file takes long
        while not beating.wait(HEARTBEAT_SECONDS):
            with db.write() as s:
                s.execute(update(KbJob).where(KbJob.id == job_id, KbJob.status == "RUNNING").values(heartbeat_at=now()))

    beat = threading.Thread(target=heartbeat, name=f"job-{job_id[:8]}", daemon=True)
    beat.start()
    try:
        if kb is None:
            raise RuntimeError("the knowledge base was deleted")
        batch: list[tuple[str, list[dict[str, Any]]]] = []
        for file_id in file_ids:
            try:
                rows = _prepare_file(db, data_dir, kb, file_id)
            except Exception:  # noqa: BLE001 - one file's failure is that file's, not the job's
                log.exception("job %s: indexing file %s failed", job_id, file_id)
                _internal_error(db, [file_id])
                continue
            if rows:
                batch.append((file_id, rows))
            if sum(len(r) for _, r in batch) >= EMBED_BATCH:
                _store(db, kb, batch, job_id, embedders)
                batch = []
        _store(db, kb, batch, job_id, embedders)
        _index_vectors(db, kb.id)
        final, message = "COMPLETED", ""
    except Exception:  # noqa: BLE001 - the job's own failure is recorded, not raised
        log.exception("job %s failed", job_id)
        final, message = "FAILED", "internal error while running this job (see the server log)"
    finally:
        beating.set()
        beat.join()
    with db.write() as s:
        s.execute(update(KbJob).where(KbJob.id == job_id, KbJob.status == "RUNNING").values(status=final, message=message, updated_at=now()))
    return True


def run_pending(db: Database, data_dir: Path, *, recover: bool = False, embedders: Embedders | None = None) -> int:
    """Run every PENDING job; with ``recover``, first put crashed RUNNING jobs back to PENDING."""
    if recover:
        with db.write() as s:
            kb_store.recover_stale_jobs(s)
    with db.read() as s:
        jobs = kb_store.pending_jobs(s)
    return sum(run_job(db, data_dir, j, embedders) for j in jobs)


def _index_vectors(db: Database, kb_id: str) -> None:
    """On pgvector, a knowledge base that grew large gets its ANN index (bailu.knowledge.pgvector);
    its revision is bumped afterwards, so retrievers pick the index up."""
    try:
        built = pgvector.maybe_index(db, kb_id)
    except Exception:  # noqa: BLE001 - without the index, search stays exact: slower, still right
        log.exception("building the vector index of knowledge base %s failed", kb_id)
        return
    if built:
        with db.write() as s:
            kb_store.bump_revision(s, kb_id)


def _internal_error(db: Database, file_ids: list[str], exc: Exception | None = None) -> None:
    """Files that failed for a reason of ours (or of the embedder's): named if it is a known one."""
    message = exc.message if isinstance(exc, BailuError) else "internal error while indexing this file (see the server log)"
    with db.write() as s:
        for file_id in file_ids:
            kb_store.set_file_status(s, file_id, index_status="INSERT_ERROR", message=message)


def _prepare_file(db: Database, data_dir: Path, kb: KnowledgeBase, file_id: str) -> list[dict[str, Any]] | None:
    """Parse and chunk one file: its rows (without vectors), or None when it failed (its status says why)."""
    with db.write() as s:
        f = s.get(KbFile, file_id)
        if f is None:  # deleted meanwhile
            return None
        name = f.name
        kb_store.set_file_status(s, file_id, status="PARSING", index_status="RUNNING", message="")
    try:
        data = kb_store.file_path(data_dir, file_id, name).read_bytes()
        parsed = parse(data, name)
    except (ParseError, OSError) as exc:
        with db.write() as s:
            kb_store.set_file_status(s, file_id, status="PARSE_FAILED", index_status="INSERT_ERROR", message=str(exc))
        return None
    with db.write() as s:
        kb_store.set_file_status(s, file_id, status="PARSE_SUCCESS")
    rows: list[dict[str, Any]]
    if kb.structure_type == "structured":
        if not parsed.rows:
            with db.write() as s:
                kb_store.set_file_status(s, file_id, index_status="INSERT_ERROR", message="a structured knowledge base takes tables (csv, xlsx)")
            return None
        rows = [
            {"title": name[:500], "text": block.text, "pages": [], "fields": record}
            for block, record in zip(parsed.blocks, parsed.rows, strict=True)
        ]
    else:
        chunks = chunk_blocks(parsed.blocks, kb.chunk_size, kb.overlap)
        rows = [{"title": (c.title or Path(name).stem)[:500], "text": c.text, "pages": list(c.pages), "fields": None} for c in chunks]
    if not rows:
        with db.write() as s:
            kb_store.set_file_status(s, file_id, index_status="INSERT_ERROR", message="the file has no text to index")
        return None
    for row in rows:
        # NUL characters (some PDFs and text files carry them) cannot be stored in PostgreSQL's text
        row["title"], row["text"] = kb_store.no_nul(row["title"]), kb_store.no_nul(row["text"])
        if row["fields"]:
            row["fields"] = {kb_store.no_nul(str(k)): kb_store.no_nul(v) if isinstance(v, str) else v for k, v in row["fields"].items()}
        row["tokens"] = chunk_tokens(row["title"], row["text"])
    return rows



def _store(db: Database, kb: KnowledgeBase, batch: list[tuple[str, list[dict[str, Any]]]], job_id: str, embedders: Embedders) -> None:
    """Embed the chunks of several files in one call (longer runs of similar lengths pad less),
    then store each file's chunks, all in one transaction: one revision for the whole batch."""
    if not batch:
        return
    pgvector_dim: int | None = None
    try:
        embedder = embedders.get(kb.embedder)
        if embedder is not None:
            texts = [f"{r['title']}\n{r['text']}" for _, rows in batch for r in rows]
            matrix = embedder.embed(texts).astype(np.float32)
            pgvector_dim = int(matrix.shape[1]) if matrix.ndim == 2 else None
            vectors = iter(matrix)
            for _, rows in batch:
                for row in rows:
                    row["vector"] = next(vectors).tobytes()
    except Exception as exc:  # noqa: BLE001 - the batch's files fail, not the job
        log.exception("job %s: embedding %d files failed", job_id, len(batch))
        _internal_error(db, [fid for fid, _ in batch], exc)
        return
    if pgvector_dim is not None:
        try:
            pgvector.drop_index_unless(db, kb.id, pgvector_dim)
        except Exception:  # noqa: BLE001 - storing then fails file by file, with a reason
            log.exception("job %s: dropping the vector index of knowledge base %s failed", job_id, kb.id)
    try:
        _write(db, kb.id, batch)  # the whole batch in one transaction
    except Exception:  # noqa: BLE001 - then file by file, so that one bad row fails its file alone
        log.warning("job %s: storing %d files at once failed; storing them one by one", job_id, len(batch), exc_info=True)
        for item in batch:
            try:
                _write(db, kb.id, [item])
            except Exception as exc:  # noqa: BLE001
                log.exception("job %s: storing file %s failed", job_id, item[0])
                _internal_error(db, [item[0]], exc)


def _write(db: Database, kb_id: str, batch: list[tuple[str, list[dict[str, Any]]]]) -> None:
    with db.write() as s:
        for file_id, rows in batch:
            if s.get(KbFile, file_id) is None:  # deleted meanwhile
                continue
            kb_store.replace_chunks(s, kb_id, file_id, rows)
            kb_store.set_file_status(s, file_id, index_status="FINISH")
