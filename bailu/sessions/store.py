"""The session store.

Rules (documented in docs/app-spec.md):

* a session belongs to one workspace and one app; the same id elsewhere is a
  different (empty) session;
* it stays valid ``ttl_seconds`` after its last use (sliding); an unknown or
  expired id starts with empty history under the id the caller sent;
* at most ``max_turns`` turns are kept; older ones are dropped;
* only completed turns are written: one row per turn holding its user and
  assistant messages together, so concurrent calls on one session can neither
  lose nor interleave turns.
"""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bailu.config import SessionSettings
from bailu.store.db import Database
from bailu.store.tables import ChatSession, SessionTurn
from bailu.store.workspaces import now

Message = dict[str, str]


class SessionStore:
    def __init__(self, db: Database, settings: SessionSettings) -> None:
        self.db = db
        self.ttl = timedelta(seconds=settings.ttl_seconds)
        self.max_turns = settings.max_turns

    def history(self, s: Session, workspace_id: str, app_id: str, session_id: str) -> list[Message]:
        """The stored messages of a live session, oldest first; [] if unknown or expired."""
        row = s.execute(
            select(ChatSession.id, ChatSession.last_used_at).where(
                ChatSession.workspace_id == workspace_id,
                ChatSession.app_id == app_id,
                ChatSession.session_id == session_id,
            )
        ).first()
        if row is None or _aware(row[1]) < now() - self.ttl:
            return []
        turns = s.scalars(
            select(SessionTurn.messages)
            .where(SessionTurn.session_pk == row[0])
            .order_by(SessionTurn.id.desc())
            .limit(self.max_turns)
        ).all()
        out: list[Message] = []
        for messages in reversed(turns):
            out.extend(messages)
        return out

    def append_turn(
        self,
        workspace_id: str,
        app_id: str,
        session_id: str,
        messages: list[Message],
        request_id: str,
        usage: dict[str, Any] | None = None,
    ) -> None:
        """Record one completed turn (its own transaction)."""
        with self.db.write() as s:
            ts = now()
            pk, expired = self._session_pk(s, workspace_id, app_id, session_id)
            if expired:
                s.execute(delete(SessionTurn).where(SessionTurn.session_pk == pk))
            s.add(SessionTurn(session_pk=pk, messages=messages, request_id=request_id, created_at=ts, usage=usage))
            s.flush()
            # the oldest of the newest max_turns turns; everything older goes
            oldest_kept = s.scalar(
                select(SessionTurn.id)
                .where(SessionTurn.session_pk == pk)
                .order_by(SessionTurn.id.desc())
                .offset(self.max_turns - 1)
                .limit(1)
            )
            if oldest_kept is not None:
                s.execute(delete(SessionTurn).where(SessionTurn.session_pk == pk, SessionTurn.id < oldest_kept))

    def _session_pk(self, s: Session, workspace_id: str, app_id: str, session_id: str) -> tuple[int, bool]:
        """The session's row id (created if needed), touched; and whether it had expired."""
        ts = now()
        sess = s.scalar(
            select(ChatSession).where(
                ChatSession.workspace_id == workspace_id,
                ChatSession.app_id == app_id,
                ChatSession.session_id == session_id,
            )
        )
        if sess is not None:
            expired = _aware(sess.last_used_at) < ts - self.ttl
            sess.last_used_at = ts
            return sess.id, expired
        try:
            with s.begin_nested():
                sess = ChatSession(
                    workspace_id=workspace_id, app_id=app_id, session_id=session_id, created_at=ts, last_used_at=ts
                )
                s.add(sess)
            return sess.id, False
        except IntegrityError:  # created concurrently by another process (PostgreSQL)
            sess = s.scalars(
                select(ChatSession).where(
                    ChatSession.workspace_id == workspace_id,
                    ChatSession.app_id == app_id,
                    ChatSession.session_id == session_id,
                )
            ).one()
            sess.last_used_at = ts
            return sess.id, False


def _aware(ts: Any) -> Any:
    """SQLite returns naive datetimes; they were written in UTC."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts
