"""Knowledge for app calls: which knowledge bases a call searches, with which filters."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from bailu.appspec import AppSpec
from bailu.calls import AppCall, Message
from bailu.config import KnowledgeSettings
from bailu.errors import Conflict, InvalidParameter
from bailu.knowledge import pgvector
from bailu.knowledge import store as kb_store
from bailu.knowledge.embedders import Embedders
from bailu.knowledge.lexical import chunk_tokens
from bailu.knowledge.parsing import TABLE_TYPES, file_type
from bailu.knowledge.rerankers import Rerankers
from bailu.knowledge.retrieval import Filters, Hit, Retriever
from bailu.store.db import Database
from bailu.store.tables import KbChunk, KnowledgeBase


log = logging.getLogger("bailu.knowledge")

def add_files(
    db: Database, data_dir: Path, kb: KnowledgeBase, files: list[tuple[str, bytes]], tags: list[str], meta: dict[str, Any]
) -> tuple[str, list[str]]:
    """Store uploaded files (bytes in ``DATA_DIR/files``, written before the rows that name
    them, outside the transaction) and queue one indexing job for them. A structured knowledge
    base takes tables only: other files are refused here, naming them, before anything is stored."""
    if kb.structure_type == "structured":
        wrong = [name for name, _ in files if file_type(name) not in TABLE_TYPES]
        if wrong:
            raise InvalidParameter(f"a structured knowledge base takes tables ({', '.join(TABLE_TYPES)}): {', '.join(wrong)}")
    (data_dir / "files").mkdir(parents=True, exist_ok=True)
    ids = [kb_store.new_file_id() for _ in files]
    written = []
    try:
        for file_id, (name, data) in zip(ids, files, strict=True):
            path = kb_store.file_path(data_dir, file_id, name)
            path.write_bytes(data)
            written.append(path)
        with db.write() as s:
            for file_id, (name, data) in zip(ids, files, strict=True):
                kb_store.add_file(s, kb, name, len(data), hashlib.sha256(data).hexdigest(), tags, meta, file_id=file_id)
            job = kb_store.create_job(s, kb, ids)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return job.id, ids


def remove_kb(db: Database, data_dir: Path, workspace_id: str, kb_id: str) -> bool:
    """Delete a knowledge base: its files (and their bytes), chunks, jobs and vector index; False
    if there is no such knowledge base in the workspace. Apps that name it then get a 400 naming
    the id, as for any unknown one. A job still running for it finds its files gone and stops."""
    with db.write() as s:
        kb = kb_store.get_kb(s, workspace_id, kb_id)
        if kb is None:
            return False
        files = kb_store.delete_kb(s, kb)
    for f in files:
        kb_store.file_path(data_dir, f.id, f.name).unlink(missing_ok=True)
    try:
        pgvector.drop_index(db, kb_id)
    except Exception:  # noqa: BLE001 - the knowledge base is gone; an index left over costs disk only
        log.exception("dropping the vector index of deleted knowledge base %s failed", kb_id)
    return True


def remove_file(db: Database, data_dir: Path, workspace_id: str, file_id: str) -> bool:
    """Delete a file, its chunks (from every index) and its bytes; False if there is no such
    file in the workspace. A file being parsed cannot be deleted (Bailian's rule)."""
    with db.write() as s:
        f = kb_store.get_file(s, workspace_id, file_id)
        if f is None:
            return False
        if f.status == "PARSING":
            raise InvalidParameter("Current file status does not support delete.")
        path = kb_store.file_path(data_dir, f.id, f.name)
        kb_store.delete_file(s, f)
    path.unlink(missing_ok=True)
    return True


def edit_chunk(s: Session, workspace_id: str, chunk_id: int, *, text: str | None = None, title: str | None = None, enabled: bool | None = None,
               vector: bytes | None = None) -> KbChunk | None:
    """Change a chunk's text or title (with its new ``vector``, if its knowledge base has an
    embedder), or whether it takes part in retrieval. See :func:`update_chunk`."""
    c = s.get(KbChunk, chunk_id)
    if c is None or kb_store.get_kb(s, workspace_id, c.kb_id) is None:
        return None
    if text is not None:
        c.text = text
    if title is not None:
        c.title = title
    if text is not None or title is not None:
        c.tokens = chunk_tokens(c.title, c.text)
        c.vector = vector
        if pgvector.enabled(s):
            s.flush()
            pgvector.write(s, [(c.id, vector)])
    if enabled is not None:
        c.enabled = enabled
    kb_store.bump_revision(s, c.kb_id)
    s.flush()
    return c


def update_chunk(db: Database, workspace_id: str, chunk_id: int, *, text: str | None = None, title: str | None = None,
                 enabled: bool | None = None, embedders: Embedders | None = None) -> KbChunk | None:
    """:func:`edit_chunk`, re-embedding a changed chunk first, outside the write transaction
    (a remote embedder may take seconds; on SQLite the write lock is the whole process's). If
    another edit changed the chunk meanwhile, the vector would not match: it is made again."""
    text = kb_store.no_nul(text) if text is not None else None
    title = kb_store.no_nul(title) if title is not None else None
    if text is None and title is None:
        with db.write() as s:
            return edit_chunk(s, workspace_id, chunk_id, enabled=enabled)
    for _ in range(3):
        with db.read() as s:
            c = s.get(KbChunk, chunk_id)
            kb = kb_store.get_kb(s, workspace_id, c.kb_id) if c is not None else None
            if c is None or kb is None:
                return None
            seen = (c.title, c.text)
            embedder_name = kb.embedder
        embedder = (embedders or Embedders()).get(embedder_name)
        vector = None
        if embedder is not None:
            content = f"{seen[0] if title is None else title}\n{seen[1] if text is None else text}"
            vector = embedder.embed([content])[0].astype("float32").tobytes()
        with db.write() as s:
            current = s.get(KbChunk, chunk_id)
            if current is not None and (current.title, current.text) != seen:
                continue  # edited by someone else while this one was embedding
            return edit_chunk(s, workspace_id, chunk_id, text=text, title=title, enabled=enabled, vector=vector)
    raise Conflict("The chunk kept changing while it was being edited: try again.")


def delete_chunk(s: Session, workspace_id: str, chunk_id: int) -> bool:
    c = s.get(KbChunk, chunk_id)
    if c is None or kb_store.get_kb(s, workspace_id, c.kb_id) is None:
        return False
    kb_store.bump_revision(s, c.kb_id)
    s.delete(c)
    return True


class Knowledge:
    """The knowledge layer of one process: its embedders, rerankers and retriever."""

    def __init__(self, settings: KnowledgeSettings | None = None) -> None:
        self.embedders = Embedders(settings)
        self.rerankers = Rerankers(settings)
        self.retriever = Retriever(self.embedders, self.rerankers)

    def close(self) -> None:
        self.embedders.close()
        self.rerankers.close()

    def __enter__(self) -> Knowledge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def choose(self, embedder: str | None, reranker: str | None) -> tuple[str, str | None]:
        """A new knowledge base's embedder and reranker: the ones asked for (400 when unknown), else the defaults."""
        if embedder is not None and not self.embedders.known(embedder):
            raise InvalidParameter(f"embedder: '{embedder}' is not an embedder here (known: {', '.join(self.embedders.names())}).")
        if reranker is not None and reranker != "none" and not self.rerankers.known(reranker):
            raise InvalidParameter(f"reranker: '{reranker}' is not configured in [rerankers].")
        chosen_reranker = self.rerankers.default_name() if reranker is None else (None if reranker == "none" else reranker)
        return embedder or self.embedders.default_name(), chosen_reranker

    @staticmethod
    def wanted(spec: AppSpec, call: AppCall) -> bool:
        """Whether this call involves knowledge bases (or rag_options that must be checked)."""
        rag = call.rag
        return bool(
            (spec.knowledge and spec.knowledge.pipeline_ids)
            or rag.pipeline_ids is not None or rag.file_ids or rag.metadata_filter or rag.structured_filter
        )

    def retrieve_for(self, s: Session, workspace_id: str, spec: AppSpec, call: AppCall, history: Sequence[Message] = ()) -> list[Hit] | None:
        """The chunks for this call, or None when it uses no knowledge base.

        Call-time ``rag_options.pipeline_ids`` (first 5) replace the app's; ids that are
        not knowledge bases of this workspace are a 400 that names them (another
        workspace's look exactly like unknown ones).
        """
        rag = call.rag
        from_call = rag.pipeline_ids is not None
        kb_ids = rag.pipeline_ids if from_call else (spec.knowledge.pipeline_ids if spec.knowledge else [])
        if not kb_ids:  # (call-time pipeline_ids: [] turns retrieval off for this call)
            if rag.file_ids or rag.metadata_filter or rag.structured_filter:
                raise InvalidParameter("parameters.rag_options: file_ids and filters need knowledge bases to search "
                                       + ("(pipeline_ids is empty)." if from_call else "(this app has none: send pipeline_ids)."))
            return None
        kbs = []
        for kb_id in kb_ids:
            kb = kb_store.get_kb(s, workspace_id, kb_id)
            if kb is None:
                where = "parameters.rag_options.pipeline_ids" if from_call else "the app's knowledge.pipeline_ids"
                raise InvalidParameter(f"{where}: no knowledge base '{kb_id}' in this workspace.")
            kbs.append(kb)
        bad = kb_store.foreign_file(s, workspace_id, rag.file_ids or [], kb_ids)
        if bad is not None:
            raise InvalidParameter(f"parameters.rag_options.file_ids: file '{bad}' is not in the knowledge bases of pipeline_ids.")
        filters = Filters(
            file_ids=frozenset(rag.file_ids) if rag.file_ids else None,
            tags=frozenset(rag.tags) if rag.tags else None,
            metadata=rag.metadata_filter or None,
            structured=rag.structured_filter or None,
        )
        top_k = spec.knowledge.top_k if spec.knowledge else 5
        threshold = spec.knowledge.threshold if spec.knowledge else 0.0
        return self.retriever.retrieve(s, kbs, query_of(call), top_k=top_k, threshold=threshold, filters=filters,
                                       context=previous_question(call, history))


def query_of(call: AppCall) -> str:
    if call.prompt:
        return call.prompt
    users = [m["content"] for m in call.messages or [] if m["role"] == "user"]
    return users[-1] if users else ""


def previous_question(call: AppCall, history: Sequence[Message]) -> str:
    """The user's question before this one — from the session's history, or from ``messages`` —
    the conversation context retrieval uses (Bailian rewrites multi-turn queries with a model;
    bailu weighs the previous question in, which costs no model call)."""
    earlier = list(history) + list(call.messages or [])
    users = [m["content"] for m in earlier if m.get("role") == "user" and isinstance(m.get("content"), str)]
    if not call.prompt and users:
        users = users[:-1]  # with messages and no prompt, the last user message is the question itself
    return users[-1] if users else ""


def rag_thought(call: AppCall, hits: list[Hit]) -> dict[str, Any]:
    """The ``agentRag`` step shown with ``has_thoughts`` (WIRE.md §8)."""
    observation = [
        {"index_id": str(i), "doc_id": h.doc_id, "doc_name": h.doc_name, "title": h.title, "text": h.text, "score": h.score}
        for i, h in enumerate(hits, start=1)
    ]
    return {
        "thought": f"检索到 {len(hits)} 条相关资料",
        "action_type": "agentRag",
        "action_name": "文档检索",
        "action": "agentRag",
        "action_input": {"query": query_of(call)},
        "action_input_stream": None,
        "response": None,
        "observation": json.dumps(observation, ensure_ascii=False),
    }
