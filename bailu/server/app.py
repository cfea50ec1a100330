"""The ASGI application: ``create_app(settings)``.

Routes only translate: bytes → :class:`~bailu.calls.AppCall` → runner events →
DashScope JSON or SSE. Every error is rendered by :mod:`bailu.server.errors`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from bailu import __version__, ids
from bailu.calls import parse_app_call
from bailu.config import Settings
from bailu.errors import InvalidParameter
from bailu.knowledge.service import Knowledge
from bailu.models import ModelRegistry
from bailu.runner import Prepared, Runner
from bailu.server import admin
from bailu.server.encoders import KEEPALIVE, DashScopeEncoder
from bailu.server.errors import as_bailu_error, install_error_handlers
from bailu.store.db import Database

log = logging.getLogger("bailu.server")
T = TypeVar("T")

#: a stream that stays silent this long gets a ``:keepalive`` comment frame
KEEPALIVE_SECONDS = 15.0
_END = object()


class _Silence(Exception):
    """No event for ``KEEPALIVE_SECONDS``: time for a keepalive comment."""


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


def create_app(settings: Settings, *, db: Database | None = None) -> FastAPI:
    database = db or Database(settings.database_url)
    models = ModelRegistry(settings.models)
    runner = Runner(settings, database, models)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        worker = asyncio.ensure_future(_index_worker(database, settings, runner.knowledge))
        yield
        worker.cancel()  # a job already running in its thread goes on until the process exits, and resumes after a restart
        await models.aclose()
        # runner.knowledge's HTTP clients are left open: that job may still be using them
        if db is None:
            database.dispose()

    app = FastAPI(
        title="bailu", version=__version__, lifespan=lifespan, docs_url="/api/v1/admin/docs", redoc_url=None,
        openapi_url="/api/v1/admin/openapi.json",
    )
    app.state.settings = settings
    app.state.runner = runner
    install_error_handlers(app)
    app.include_router(admin.router)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    async def completion(app_id: str, request: Request) -> Response:
        rid = ids.request_id()
        request.state.request_id = rid
        call = parse_app_call(app_id, await _body(request), request.headers, rid)  # type: ignore[arg-type]
        prepared = await runner.prepare(call, request.headers.get("authorization"))
        if call.stream:
            try:
                return await _stream(request, runner, prepared)
            except ClientGone:
                log.info("request %s: client disconnected before the first frame", rid)
                return Response(status_code=499)
        enc = DashScopeEncoder(rid, prepared.session_id, incremental=False)

        async def collect() -> None:
            async for event in runner.run(prepared):
                enc.feed(event)

        try:
            await _unless_disconnected(request, collect())
        except ClientGone:
            log.info("request %s: client disconnected, run cancelled", rid)
            return Response(status_code=499)
        return JSONResponse(enc.body(), headers={"x-request-id": rid})

    # The Java SDK's own tests use a base without /api/v1; the alias costs nothing.
    for path in ("/api/v1/apps/{app_id}/completion", "/apps/{app_id}/completion"):
        app.add_api_route(path, completion, methods=["POST"], include_in_schema=path.startswith("/api"))
    return app


#: the largest request body accepted on the completion route
MAX_BODY = 16 * 1024 * 1024


async def _body(request: Request) -> bytes:
    """The request body, refused past ``MAX_BODY`` without reading the rest."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY:
        raise InvalidParameter(f"The request body is larger than {MAX_BODY // (1024 * 1024)} MB.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise InvalidParameter(f"The request body is larger than {MAX_BODY // (1024 * 1024)} MB.")
        chunks.append(chunk)
    return b"".join(chunks)


def _prune_snapshots(db: Database, knowledge: Knowledge) -> None:
    """Drop in-memory indexes of knowledge bases deleted by another process (``bailu kb delete``)."""
    from sqlalchemy import select

    from bailu.store.tables import KnowledgeBase

    with db.read() as s:
        existing = set(s.scalars(select(KnowledgeBase.id)))
    knowledge.retriever.prune(existing)


async def _index_worker(db: Database, settings: Settings, knowledge: Knowledge, every: float = 1.0) -> None:
    """Runs knowledge-base indexing jobs in this process, one at a time, off the event loop;
    jobs left RUNNING by a crashed process resume (bailu.knowledge.ingest). Every ten
    minutes it also deletes expired sessions and forgets deleted knowledge bases' indexes."""
    import anyio.to_thread

    from bailu.knowledge.ingest import run_pending

    from bailu.sessions.store import purge_expired

    passes = 0
    while True:
        recover = passes % 30 == 0  # look for crashed jobs at start and every 30 passes
        chores: list[Callable[[], object]] = [lambda: run_pending(db, settings.data_dir, recover=recover, embedders=knowledge.embedders)]
        if passes % 600 == 0:
            chores += [lambda: purge_expired(db, settings.sessions.ttl_seconds), lambda: _prune_snapshots(db, knowledge)]
        for chore in chores:  # one failing does not skip the others
            try:
                await anyio.to_thread.run_sync(chore)
            except Exception:  # noqa: BLE001 - keep the worker alive; a job records its own failure
                log.exception("background worker")
        passes += 1
        await asyncio.sleep(every)


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; cancel it and raise :class:`ClientGone` if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientGone()


async def _stream(request: Request, runner: Runner, prepared: Prepared) -> Response:
    """An SSE response. Errors before the first frame are plain JSON errors (WIRE.md §6.1)."""
    rid = prepared.call.request_id
    enc = DashScopeEncoder(rid, prepared.session_id, prepared.call.incremental_output)
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in runner.run(prepared):
                await queue.put(event)
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the response loop
            await queue.put(exc)

    task = asyncio.ensure_future(pump())

    async def next_payload(keepalive: bool = True) -> dict[str, Any] | object:
        """The next frame payload, ``_END``, or raises the run's error (or ``_Silence``
        when nothing came for ``KEEPALIVE_SECONDS``)."""
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS) if keepalive else await queue.get()
            except TimeoutError:
                raise _Silence() from None
            if item is _END:
                return _END
            if isinstance(item, BaseException):
                raise item
            payload = enc.feed(item)
            if payload is not None:
                return payload

    try:
        first = await _unless_disconnected(request, next_payload(keepalive=False))
    except BaseException:
        task.cancel()
        raise

    async def frames() -> AsyncIterator[bytes]:
        try:
            if first is not _END:
                yield enc.sse(first)  # type: ignore[arg-type]
            else:
                return
            while True:
                try:
                    payload = await next_payload()
                except _Silence:
                    yield KEEPALIVE
                    continue
                except Exception as exc:  # noqa: BLE001 - reported in-band
                    yield enc.sse_error(as_bailu_error(exc, rid))
                    return
                if payload is _END:
                    return
                yield enc.sse(payload)  # type: ignore[arg-type]
        finally:
            task.cancel()

    return StreamingResponse(
        frames(),
        media_type="text/event-stream;charset=UTF-8",
        headers={"x-request-id": rid, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )

