"""Runs one app call: authorise, resolve the published app, load history, run the
runtime, record the turn. Protocol-independent: routes hand it an ``AppCall`` and
encode the events it yields.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy.orm import Session

from bailu import ids
from bailu.appspec import AppSpec
from bailu.calls import AppCall, Message
from bailu.config import Settings
from bailu.errors import AppAccessDenied, InvalidApiKey, WorkspaceAccessDenied
from bailu.events import DocReferences, Event, Finished, TextDelta, Thought, Usage
from bailu.knowledge.citations import CitationFilter, context_prompt
from bailu.knowledge.retrieval import Hit
from bailu.knowledge.service import Knowledge, rag_thought
from bailu.models import ChatRequest, ModelRegistry
from bailu.runtimes.agent import build_request, run_agent
from bailu.sessions import SessionStore
from bailu.store import apps as app_repo
from bailu.store import workspaces as ws_repo
from bailu.store.db import Database

T = TypeVar("T")


@dataclass
class Prepared:
    """Everything resolved before the model runs."""

    call: AppCall
    workspace_id: str
    spec: AppSpec
    session_id: str
    request: ChatRequest
    answer: list[str] = field(default_factory=list)
    usage: dict[int, Usage] = field(default_factory=dict)
    hits: list[Hit] | None = None  # None: the app uses no knowledge base on this call
    show_sources: bool = False


class Runner:
    def __init__(self, settings: Settings, db: Database, models: ModelRegistry) -> None:
        self.settings = settings
        self.db = db
        self.models = models
        self.sessions = SessionStore(db, settings.sessions)
        self._default_ws: str | None = None
        self._specs: dict[tuple[str, int], AppSpec] = {}
        self.knowledge = Knowledge(settings.knowledge)

    # -- before the model -------------------------------------------------------------------

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a storage call. SQLite work is local and sub-millisecond: it runs inline,
        because a thread hop per call costs more than the query (GIL hand-offs measured
        in bench/overhead.py) — unless another thread (the indexing worker) is writing,
        so the event loop never waits for it. PostgreSQL work waits on the network: it
        always runs in a thread."""
        if self.db.is_sqlite and not self.db.writer_busy():
            return fn(*args)
        return await anyio.to_thread.run_sync(fn, *args)

    async def prepare(self, call: AppCall, authorization: str | None) -> Prepared:
        spec, workspace_id, session_id, history = await self._db(self._resolve, call, authorization)
        hits: list[Hit] | None = None
        if self.knowledge.wanted(spec, call):
            # retrieval is CPU work (BM25, embedding the query): never on the event loop
            hits = await anyio.to_thread.run_sync(self._retrieve, workspace_id, spec, call, history)
        show_sources = bool(spec.knowledge and spec.knowledge.show_sources)
        context = context_prompt(hits, show_sources) if hits is not None else None
        request = build_request(spec, call, history, context)
        return Prepared(call=call, workspace_id=workspace_id, spec=spec, session_id=session_id, request=request,
                        hits=hits, show_sources=show_sources)

    def _resolve(self, call: AppCall, authorization: str | None) -> tuple[AppSpec, str, str, list[Message]]:
        """Key, workspace, published app and session history, in one read."""
        with self.db.read() as s:
            workspace_id = self.workspace_for(s, authorization, call.workspace)
            published = app_repo.latest_published(s, workspace_id, call.app_id)
            if published is None:
                if app_repo.get_app(s, workspace_id, call.app_id) is not None:
                    raise AppAccessDenied("App access denied: the app has not been published.")
                raise AppAccessDenied()
            spec = self._spec(published)
            history: list[Message] = []
            if call.messages is None and call.session_id:
                session_id = call.session_id
                history = self.sessions.history(s, workspace_id, call.app_id, session_id)
            else:
                session_id = ids.session_id()
        return spec, workspace_id, session_id, history

    def _retrieve(self, workspace_id: str, spec: AppSpec, call: AppCall, history: list[Message]) -> list[Hit] | None:
        with self.db.read() as s:
            return self.knowledge.retrieve_for(s, workspace_id, spec, call, history)

    def _spec(self, published: app_repo.PublishedApp) -> AppSpec:
        """Parsed specs by (app, version); versions are immutable, so this never goes stale."""
        key = (published.app_id, published.version)
        spec = self._specs.get(key)
        if spec is None:
            if len(self._specs) > 1024:
                self._specs.clear()
            spec = self._specs[key] = AppSpec.model_validate(published.spec)
        return spec

    def workspace_for(self, s: Session, authorization: str | None, workspace: str | None) -> str:
        """The workspace a request acts in: the key's, which must be the one named by
        ``X-DashScope-WorkSpace`` (or the default workspace when the header is absent)."""
        key = bearer_token(authorization)
        owner = ws_repo.key_owner(s, key) if key else None
        if owner is None:
            raise InvalidApiKey()
        workspace_id = workspace or self._default_workspace(s)
        if owner.workspace_id != workspace_id:
            raise WorkspaceAccessDenied(
                "Workspace access denied: this API key belongs to another workspace; "
                "send X-DashScope-WorkSpace with the app's workspace id."
                if workspace is None
                else None
            )
        return workspace_id

    def _default_workspace(self, s: object) -> str:
        if self._default_ws is None:
            self._default_ws = ws_repo.default_workspace_id(s)  # type: ignore[arg-type]
        if self._default_ws is None:
            raise InvalidApiKey()
        return self._default_ws

    # -- the model ----------------------------------------------------------------------------

    async def run(self, p: Prepared) -> AsyncIterator[Event]:
        """The runtime's events; the turn is recorded before ``Finished`` is passed on."""
        model = self.models.get(p.spec.model)
        if p.hits is not None and p.call.has_thoughts:
            yield Thought(rag_thought(p.call, p.hits))
        cite = CitationFilter(len(p.hits)) if p.hits is not None and p.show_sources else None
        async for event in run_agent(p.spec, p.request, model):
            if isinstance(event, TextDelta) and cite is not None:
                event = TextDelta(cite.feed(event.text))
                if not event.text:
                    continue
            if isinstance(event, Finished) and cite is not None:
                rest = cite.flush()
                if rest:
                    p.answer.append(rest)
                    yield TextDelta(rest)
                yield DocReferences(cite.references(p.hits or []))
            if isinstance(event, TextDelta):
                p.answer.append(event.text)
            elif isinstance(event, Usage):
                p.usage[event.index] = event
            elif isinstance(event, Finished):
                await self._db(self._record, p)
            yield event

    def _record(self, p: Prepared) -> None:
        answer = {"role": "assistant", "content": "".join(p.answer)}
        if p.call.messages is not None:
            turn = [m for m in p.call.messages if m["role"] != "system"] + [answer]
        else:
            turn = [{"role": "user", "content": p.call.prompt or ""}, answer]
        usage = {str(i): [u.model_id, u.input_tokens, u.output_tokens] for i, u in p.usage.items()}
        # a session id this server just made up cannot exist yet: a plain insert suffices
        fresh = p.call.messages is not None or not p.call.session_id
        self.sessions.append_turn(
            p.workspace_id, p.call.app_id, p.session_id, turn, p.call.request_id, usage, new=fresh
        )


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
