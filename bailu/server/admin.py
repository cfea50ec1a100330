"""The native admin REST API for knowledge bases (JSON; OpenAPI at ``/api/v1/admin/openapi.json``).

Every route takes ``Authorization: Bearer <api key>`` and acts in that key's workspace
(``X-DashScope-WorkSpace``, if sent, must name the same one). Objects of other
workspaces answer exactly like objects that do not exist. Errors use the DashScope
shape ``{code, message, request_id}``.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, File, Form, Header, Request, UploadFile
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from bailu.errors import InvalidApiKey, InvalidParameter, NotFound, WorkspaceAccessDenied
from bailu.knowledge import service as kb_service
from bailu.knowledge import store as kb_store
from bailu.knowledge.chunking import DEFAULT_CHUNK_SIZE, DEFAULT_OVERLAP, check_sizes
from bailu.knowledge.retrieval import Filters
from bailu.knowledge.service import add_files, delete_chunk, remove_file
from bailu.runner import Runner, bearer_token
from bailu.store import workspaces as ws_repo
from bailu.store.tables import KbChunk, KbFile, KbJob, KnowledgeBase

router = APIRouter(prefix="/api/v1/admin", tags=["knowledge"])
MAX_FILES = 100
MAX_FILE_BYTES = 100 * 1024 * 1024  # Bailian's limit for documents


class KbCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=1000)
    chunk_size: int = DEFAULT_CHUNK_SIZE
    overlap: int = DEFAULT_OVERLAP
    structured: bool = False
    embedder: str | None = Field(default=None, description="an embedder of this server (default: [knowledge] embedder)")
    reranker: str | None = Field(default=None, description="a configured reranker, or 'none' (default: [knowledge] reranker)")


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    query: str = Field(min_length=1)
    top_k: int = Field(default=5, ge=1, le=100)
    threshold: float = Field(default=0.0, ge=0, le=1)
    file_ids: list[str] | None = None
    tags: list[str] | None = None
    metadata_filter: dict[str, Any] | None = None
    structured_filter: dict[str, Any] | None = None


class ChunkUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str | None = Field(default=None, min_length=1, max_length=6000)
    title: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None


def _runner(request: Request) -> Runner:
    return request.app.state.runner  # type: ignore[no-any-return]


def workspace(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_dashscope_workspace: Annotated[str | None, Header()] = None,
) -> str:
    key = bearer_token(authorization)
    with _runner(request).db.read() as s:
        owner = ws_repo.key_owner(s, key) if key else None
    if owner is None:
        raise InvalidApiKey()
    if x_dashscope_workspace and x_dashscope_workspace != owner.workspace_id:
        raise WorkspaceAccessDenied()
    return owner.workspace_id


Workspace = Annotated[str, Depends(workspace)]


def _iso(ts: datetime) -> str:
    """UTC, with its offset (SQLite hands datetimes back without one)."""
    return (ts if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)).isoformat()


def kb_json(kb: KnowledgeBase) -> dict[str, Any]:
    return {"id": kb.id, "name": kb.name, "description": kb.description, "structure_type": kb.structure_type,
            "chunk_size": kb.chunk_size, "overlap": kb.overlap, "embedder": kb.embedder, "reranker": kb.reranker, "created_at": _iso(kb.created_at)}


def file_json(f: KbFile) -> dict[str, Any]:
    return {"id": f.id, "kb_id": f.kb_id, "name": f.name, "file_type": f.file_type, "size": f.size, "tags": f.tags,
            "metadata": f.meta, "status": f.status, "index_status": f.index_status, "message": f.message,
            "created_at": _iso(f.created_at)}


def chunk_json(c: KbChunk) -> dict[str, Any]:
    return {"id": c.id, "file_id": c.file_id, "seq": c.seq, "title": c.title, "text": c.text, "pages": c.pages,
            "fields": c.fields, "enabled": c.enabled}


def _kb(request: Request, ws: str, kb_id: str) -> KnowledgeBase:
    with _runner(request).db.read() as s:
        kb = kb_store.get_kb(s, ws, kb_id)
    if kb is None:
        raise NotFound(f"No knowledge base '{kb_id}' in this workspace.")
    return kb


@router.post("/knowledge_bases", status_code=201)
def create_kb(request: Request, ws: Workspace, body: KbCreate) -> dict[str, Any]:
    try:
        check_sizes(body.chunk_size, body.overlap)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    runner = _runner(request)
    embedder, reranker = runner.knowledge.choose(body.embedder, body.reranker)
    with runner.db.write() as s:
        kb = kb_store.create_kb(s, ws, body.name, chunk_size=body.chunk_size, overlap=body.overlap, structured=body.structured,
                                embedder=embedder, reranker=reranker, description=body.description)
        return kb_json(kb)


@router.get("/knowledge_bases")
def list_kbs(request: Request, ws: Workspace) -> dict[str, Any]:
    with _runner(request).db.read() as s:
        return {"knowledge_bases": [kb_json(k) for k in kb_store.list_kbs(s, ws)]}


@router.get("/knowledge_bases/{kb_id}")
def get_kb(request: Request, ws: Workspace, kb_id: str) -> dict[str, Any]:
    return kb_json(_kb(request, ws, kb_id))


@router.delete("/knowledge_bases/{kb_id}")
def delete_kb(request: Request, ws: Workspace, kb_id: str) -> dict[str, Any]:
    """Delete a knowledge base with its files, chunks and jobs (Bailian's DeleteIndex)."""
    runner = _runner(request)
    removed = kb_service.remove_kb(runner.db, runner.settings.data_dir, ws, kb_id)
    if not removed:
        raise NotFound(f"No knowledge base '{kb_id}' in this workspace.")
    runner.knowledge.retriever.forget(kb_id)
    return {"id": kb_id, "deleted": True}


@router.post("/knowledge_bases/{kb_id}/files", status_code=202)
async def upload(
    request: Request, ws: Workspace, kb_id: str,
    files: Annotated[list[UploadFile], File(description="One or more documents")],
    tags: Annotated[str, Form(description="Comma-separated tags")] = "",
    metadata: Annotated[str, Form(description="A JSON object")] = "{}",
) -> dict[str, Any]:
    """Upload documents; indexing runs as a job (poll ``GET /jobs/{id}`` or the files)."""
    kb = _kb(request, ws, kb_id)
    try:
        meta = json.loads(metadata)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise InvalidParameter("metadata must be a JSON object.")
    if len(files) > MAX_FILES:
        raise InvalidParameter(f"At most {MAX_FILES} files per upload.")
    uploads = []
    for f in files:
        data = await f.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise InvalidParameter(f"{f.filename}: larger than {MAX_FILE_BYTES // (1024 * 1024)} MB.", code="DataCenter.FileTooLarge")
        uploads.append((f.filename or "upload.txt", data))
    runner = _runner(request)
    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    job_id, ids = await anyio.to_thread.run_sync(lambda: add_files(runner.db, runner.settings.data_dir, kb, uploads, tag_list, meta))
    return {"job_id": job_id, "file_ids": ids}


@router.get("/knowledge_bases/{kb_id}/files")
def list_files(request: Request, ws: Workspace, kb_id: str) -> dict[str, Any]:
    kb = _kb(request, ws, kb_id)
    with _runner(request).db.read() as s:
        return {"files": [file_json(f) for f in kb_store.list_files(s, kb.id)]}


@router.get("/files/{file_id}")
def get_file(request: Request, ws: Workspace, file_id: str) -> dict[str, Any]:
    with _runner(request).db.read() as s:
        f = kb_store.get_file(s, ws, file_id)
        if f is None:
            raise NotFound(f"No file '{file_id}' in this workspace.")
        return file_json(f)


@router.delete("/files/{file_id}")
def delete_file(request: Request, ws: Workspace, file_id: str) -> dict[str, Any]:
    """Delete a file; its chunks leave every index at once."""
    runner = _runner(request)
    if not remove_file(runner.db, runner.settings.data_dir, ws, file_id):
        raise NotFound(f"No file '{file_id}' in this workspace.")
    return {"id": file_id, "deleted": True}


@router.get("/jobs/{job_id}")
def get_job(request: Request, ws: Workspace, job_id: str) -> dict[str, Any]:
    with _runner(request).db.read() as s:
        job = s.get(KbJob, job_id)
        if job is None or job.workspace_id != ws:
            raise NotFound(f"No job '{job_id}' in this workspace.")
        files = [file_json(f) for f in s.scalars(select(KbFile).where(KbFile.id.in_(job.file_ids)))]
        return {"id": job.id, "kb_id": job.kb_id, "status": job.status, "message": job.message, "files": files}


@router.post("/knowledge_bases/{kb_id}/retrieve")
def retrieve(request: Request, ws: Workspace, kb_id: str, body: RetrieveRequest) -> dict[str, Any]:
    kb = _kb(request, ws, kb_id)
    runner = _runner(request)
    filters = Filters(
        file_ids=frozenset(body.file_ids) if body.file_ids else None, tags=frozenset(body.tags) if body.tags else None,
        metadata=body.metadata_filter, structured=body.structured_filter,
    )
    with runner.db.read() as s:
        bad = kb_store.foreign_file(s, ws, body.file_ids or [], [kb.id])  # as rag_options does: named
        if bad is not None:
            raise InvalidParameter(f"file_ids: no file '{bad}' in this knowledge base.")
        hits = runner.knowledge.retriever.retrieve(s, [kb], body.query, top_k=body.top_k, threshold=body.threshold, filters=filters)
    return {"nodes": [{"doc_id": h.doc_id, "doc_name": h.doc_name, "title": h.title, "text": h.text, "score": h.score,
                       "chunk_id": h.chunk_id, "pages": h.pages, "fields": h.fields} for h in hits]}


@router.get("/knowledge_bases/{kb_id}/chunks")
def list_chunks(request: Request, ws: Workspace, kb_id: str, file_id: str | None = None, offset: int = 0, limit: int = 100) -> dict[str, Any]:
    kb = _kb(request, ws, kb_id)
    q = select(KbChunk).where(KbChunk.kb_id == kb.id)
    if file_id:
        q = q.where(KbChunk.file_id == file_id)
    with _runner(request).db.read() as s:
        rows = s.scalars(q.order_by(KbChunk.file_id, KbChunk.seq).offset(max(offset, 0)).limit(min(max(limit, 1), 1000)))
        return {"chunks": [chunk_json(c) for c in rows]}


@router.patch("/chunks/{chunk_id}")
def update_chunk(request: Request, ws: Workspace, chunk_id: int, body: ChunkUpdate) -> dict[str, Any]:
    """Edit a chunk's text or title (it is re-embedded), or take it out of retrieval (``enabled: false``)."""
    runner = _runner(request)
    c = kb_service.update_chunk(runner.db, ws, chunk_id, text=body.text, title=body.title, enabled=body.enabled, embedders=runner.knowledge.embedders)
    if c is None:
        raise NotFound(f"No chunk {chunk_id} in this workspace.")
    return chunk_json(c)


@router.delete("/chunks/{chunk_id}")
def remove_chunk(request: Request, ws: Workspace, chunk_id: int) -> dict[str, Any]:
    with _runner(request).db.write() as s:
        if not delete_chunk(s, ws, chunk_id):
            raise NotFound(f"No chunk {chunk_id} in this workspace.")
    return {"id": chunk_id, "deleted": True}
