"""``bailu kb …``: knowledge bases from the command line (registered by bailu.cli)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from bailu.errors import BailuError, InvalidParameter
from bailu.knowledge import store as kb_store
from bailu.knowledge.chunking import DEFAULT_CHUNK_SIZE, DEFAULT_OVERLAP, check_sizes
from bailu.knowledge.embedders import Embedders
from bailu.knowledge.ingest import run_job
from bailu.knowledge.parsing import SUPPORTED, file_type
from bailu.knowledge.service import Knowledge, add_files, delete_chunk, remove_file, remove_kb, update_chunk
from bailu.store.db import Database
from bailu.store.tables import KbFile, KbJob, KnowledgeBase

FINAL = {"FINISH", "INSERT_ERROR"}


def register(main: click.Group, store_options: Any, open_store: Any, workspace_id: Any) -> None:
    @main.group()
    def kb() -> None:
        """Knowledge bases."""

    def _kb(db: Database, ws: str, id_or_name: str) -> KnowledgeBase:
        with db.read() as s:
            found = kb_store.find_kb(s, ws, id_or_name)
        if found is None:
            raise click.ClickException(f"no knowledge base {id_or_name!r} in workspace {ws}")
        return found

    @kb.command("create")
    @click.argument("name")
    @click.option("--workspace", help="Workspace id or name.")
    @click.option("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, show_default=True, help="Characters per chunk (1-6000).")
    @click.option("--overlap", type=int, default=DEFAULT_OVERLAP, show_default=True, help="Characters repeated between chunks (0-1024).")
    @click.option("--structured", is_flag=True, help="A table knowledge base: one chunk per row (csv, xlsx).")
    @click.option("--embedder", help="all-MiniLM-L6-v2, none, or an [embedders.NAME] of bailu.toml (default: [knowledge] embedder).")
    @click.option("--reranker", help="An [rerankers.NAME] of bailu.toml, or none (default: [knowledge] reranker).")
    @store_options
    def kb_create(name: str, workspace: str | None, chunk_size: int, overlap: int, structured: bool, embedder: str | None, reranker: str | None,
                  data_dir: str | None, config_file: str | None) -> None:
        """Create a knowledge base; prints its id (the pipeline_id apps use)."""
        try:
            check_sizes(chunk_size, overlap)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        with open_store(data_dir, config_file) as (settings, db):
            try:
                embedder, reranker = Knowledge(settings.knowledge).choose(embedder, reranker)  # checks names only: opens nothing
            except InvalidParameter as exc:
                raise click.BadParameter(exc.message) from None
            ws = workspace_id(db, workspace)
            with db.write() as s:
                new = kb_store.create_kb(s, ws, name, chunk_size=chunk_size, overlap=overlap, structured=structured, embedder=embedder, reranker=reranker)
                click.echo(new.id)

    @kb.command("add")
    @click.argument("kb_ref", metavar="KB")
    @click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
    @click.option("--workspace", help="Workspace id or name.")
    @click.option("--tags", default="", help="Comma-separated tags for every file.")
    @click.option("--metadata", default="{}", help="A JSON object of metadata for every file.")
    @click.option("--wait", is_flag=True, help="Return once every file is indexed; exit non-zero if any failed.")
    @store_options
    def kb_add(kb_ref: str, files: tuple[str, ...], workspace: str | None, tags: str, metadata: str, wait: bool, data_dir: str | None, config_file: str | None) -> None:
        """Upload files; prints one file id per line, in argument order."""
        try:
            meta = json.loads(metadata)
            assert isinstance(meta, dict)
        except (ValueError, AssertionError):
            raise click.BadParameter("--metadata must be a JSON object") from None
        tag_list = [t.strip() for t in tags.split(",") if t.strip()]
        for f in files:
            if file_type(f) not in SUPPORTED:
                click.echo(f"note: {f}: unsupported type '.{file_type(f)}', it will fail to parse", err=True)
        with open_store(data_dir, config_file) as (settings, db):
            ws = workspace_id(db, workspace)
            target = _kb(db, ws, kb_ref)
            uploads = [(Path(p).name, Path(p).read_bytes()) for p in files]
            try:
                job_id, ids = add_files(db, settings.data_dir, target, uploads, tag_list, meta)
            except InvalidParameter as exc:
                raise click.ClickException(exc.message) from None
            if not wait:
                click.echo("queued: a running `bailu serve` indexes them (or add with --wait to index here)", err=True)
            if wait:
                with Knowledge(settings.knowledge) as knowledge:
                    failed = _wait(db, settings.data_dir, job_id, ids, knowledge.embedders)
            for file_id in ids:
                click.echo(file_id)
            if wait and failed:
                raise click.ClickException("; ".join(failed))

    def _wait(db: Database, data_dir: Path, job_id: str, ids: list[str], embedders: Embedders) -> list[str]:
        with click.progressbar(length=len(ids), label="indexing", file=sys.stderr) as bar:  # type: ignore[operator]
            run_job(db, data_dir, job_id, embedders)  # unless the server claimed it first
            done: set[str] = set()
            while True:
                with db.read() as s:
                    rows = [s.get(KbFile, i) for i in ids]
                    job = s.get(KbJob, job_id)
                # finished, or deleted meanwhile
                finished = {i for i, r in zip(ids, rows, strict=True) if r is None or r.index_status in FINAL}
                bar.update(len(finished - done))
                done |= finished
                if len(done) == len(ids) or job is None or job.status in ("COMPLETED", "FAILED"):
                    break
                time.sleep(0.2)
        failed = [f"{r.name}: {r.message}" for r in rows if r is not None and r.index_status == "INSERT_ERROR"]
        if job is not None and job.status == "FAILED":
            failed.append(f"the indexing job failed: {job.message}")
        return failed

    @kb.command("retrieve")
    @click.argument("kb_ref", metavar="KB")
    @click.argument("query")
    @click.option("--workspace", help="Workspace id or name.")
    @click.option("--top-k", type=click.IntRange(1, 100), default=5, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="One JSON array of {doc_id, doc_name, title, text, score}.")
    @store_options
    def kb_retrieve(kb_ref: str, query: str, workspace: str | None, top_k: int, as_json: bool, data_dir: str | None, config_file: str | None) -> None:
        """Search a knowledge base, best first."""
        if not query.strip():
            raise click.BadParameter("the query is empty", param_hint="QUERY")
        with open_store(data_dir, config_file) as (settings, db):
            ws = workspace_id(db, workspace)
            target = _kb(db, ws, kb_ref)
            with db.read() as s:
                try:
                    with Knowledge(settings.knowledge) as knowledge:
                        hits = knowledge.retriever.retrieve(s, [target], query, top_k=top_k)
                except BailuError as exc:
                    raise click.ClickException(exc.message) from None
        if as_json:
            click.echo(json.dumps([{"doc_id": h.doc_id, "doc_name": h.doc_name, "title": h.title, "text": h.text, "score": h.score} for h in hits], ensure_ascii=False))
            return
        for h in hits:
            click.echo(f"{h.score:.3f}\t{h.doc_name}\t{h.title}\t{h.text[:120]!r}")

    @kb.command("list")
    @click.option("--workspace", help="Workspace id or name.")
    @store_options
    def kb_list(workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
        """One line per knowledge base: id, structure, embedder, reranker (or -), name."""
        with open_store(data_dir, config_file) as (_, db):
            ws = workspace_id(db, workspace)
            with db.read() as s:
                for k in kb_store.list_kbs(s, ws):
                    click.echo(f"{k.id}\t{k.structure_type}\t{k.embedder}\t{k.reranker or '-'}\t{k.name}")

    @kb.command("files")
    @click.argument("kb_ref", metavar="KB")
    @click.option("--workspace", help="Workspace id or name.")
    @store_options
    def kb_files(kb_ref: str, workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
        """A knowledge base's files with their parse and index status."""
        with open_store(data_dir, config_file) as (_, db):
            ws = workspace_id(db, workspace)
            target = _kb(db, ws, kb_ref)
            with db.read() as s:
                for f in kb_store.list_files(s, target.id):
                    click.echo(f"{f.id}\t{f.status}\t{f.index_status}\t{f.name}\t{f.message}")

    @kb.command("chunks")
    @click.argument("kb_ref", metavar="KB")
    @click.option("--file", "file_id", help="Only this file's chunks.")
    @click.option("--workspace", help="Workspace id or name.")
    @click.option("--json", "as_json", is_flag=True, help="One JSON array of whole chunks {id, file_id, enabled, title, text, pages, fields}.")
    @store_options
    def kb_chunks(kb_ref: str, file_id: str | None, workspace: str | None, as_json: bool, data_dir: str | None, config_file: str | None) -> None:
        """List chunks: id (an integer), file, on/off, title, the text's first 80 characters."""
        from sqlalchemy import select

        from bailu.store.tables import KbChunk

        with open_store(data_dir, config_file) as (_, db):
            ws = workspace_id(db, workspace)
            target = _kb(db, ws, kb_ref)
            q = select(KbChunk).where(KbChunk.kb_id == target.id)
            if file_id:
                q = q.where(KbChunk.file_id == file_id)
            with db.read() as s:
                chunks = list(s.scalars(q.order_by(KbChunk.file_id, KbChunk.seq)))
            if as_json:
                click.echo(json.dumps([{"id": c.id, "file_id": c.file_id, "enabled": c.enabled, "title": c.title, "text": c.text,
                                        "pages": c.pages, "fields": c.fields} for c in chunks], ensure_ascii=False))
                return
            for c in chunks:
                click.echo(f"{c.id}\t{c.file_id}\t{'on' if c.enabled else 'off'}\t{c.title}\t{c.text[:80]!r}")

    @kb.command("chunk-update")
    @click.argument("chunk_id", type=int)
    @click.option("--text", help="New text (re-embedded).")
    @click.option("--title", help="New title.")
    @click.option("--enable/--disable", "enabled", default=None, help="Take part in retrieval or not.")
    @click.option("--workspace", help="Workspace id or name.")
    @store_options
    def kb_chunk_update(chunk_id: int, text: str | None, title: str | None, enabled: bool | None, workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
        if text is None and title is None and enabled is None:
            raise click.UsageError("nothing to change: give --text, --title, --enable or --disable")
        with open_store(data_dir, config_file) as (settings, db):
            ws = workspace_id(db, workspace)
            with Knowledge(settings.knowledge) as knowledge:
                found = update_chunk(db, ws, chunk_id, text=text, title=title, enabled=enabled, embedders=knowledge.embedders)
            if found is None:
                raise click.ClickException(f"no chunk {chunk_id} in workspace {ws}")
            click.echo(chunk_id)

    @kb.command("chunk-delete")
    @click.argument("chunk_id", type=int)
    @click.option("--workspace", help="Workspace id or name.")
    @store_options
    def kb_chunk_delete(chunk_id: int, workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
        with open_store(data_dir, config_file) as (_, db):
            ws = workspace_id(db, workspace)
            with db.write() as s:
                if not delete_chunk(s, ws, chunk_id):
                    raise click.ClickException(f"no chunk {chunk_id} in workspace {ws}")
            click.echo(chunk_id)

    @kb.command("delete")
    @click.argument("kb_ref", metavar="KB")
    @click.option("--workspace", help="Workspace id or name.")
    @store_options
    def kb_delete(kb_ref: str, workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
        """Delete a knowledge base with its files, chunks and jobs; prints its id."""
        with open_store(data_dir, config_file) as (settings, db):
            ws = workspace_id(db, workspace)
            target = _kb(db, ws, kb_ref)
            remove_kb(db, settings.data_dir, ws, target.id)
            click.echo(target.id)

    @kb.command("delete-file")
    @click.argument("file_id")
    @click.option("--workspace", help="Workspace id or name.")
    @store_options
    def kb_delete_file(file_id: str, workspace: str | None, data_dir: str | None, config_file: str | None) -> None:
        """Delete a file and its chunks."""
        with open_store(data_dir, config_file) as (settings, db):
            ws = workspace_id(db, workspace)
            try:
                found = remove_file(db, settings.data_dir, ws, file_id)
            except InvalidParameter as exc:
                raise click.ClickException(exc.message) from None
            if not found:
                raise click.ClickException(f"no file {file_id} in workspace {ws}")
            click.echo(file_id)
