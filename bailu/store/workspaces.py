"""Workspaces and API keys.

Keys are random 128-bit secrets, so they are stored as a SHA-256 digest (a slow
password hash buys nothing against a brute force of 2^128 and would cost a hash
per request); the plain key is returned once, at creation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from bailu import ids
from bailu.store.tables import ApiKey, Workspace

DEFAULT_WORKSPACE_NAME = "default"


@dataclass(frozen=True)
class KeyOwner:
    key_id: str
    workspace_id: str


def now() -> datetime:
    return datetime.now(UTC)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def ensure_default_workspace(s: Session) -> Workspace:
    ws = s.scalar(select(Workspace).where(Workspace.is_default.is_(True)))
    if ws is None:
        ws = Workspace(id=ids.workspace_id(), name=DEFAULT_WORKSPACE_NAME, is_default=True, created_at=now())
        s.add(ws)
        s.flush()
    return ws


def default_workspace_id(s: Session) -> str | None:
    return s.scalar(select(Workspace.id).where(Workspace.is_default.is_(True)))


def create_workspace(s: Session, name: str) -> Workspace:
    ws = Workspace(id=ids.workspace_id(), name=name, is_default=False, created_at=now())
    s.add(ws)
    s.flush()
    return ws


def find_workspace(s: Session, id_or_name: str | None) -> Workspace | None:
    """By id or by name; ``None`` means the default workspace."""
    if id_or_name is None:
        return s.scalar(select(Workspace).where(Workspace.is_default.is_(True)))
    ws = s.get(Workspace, id_or_name)
    if ws is None:
        ws = s.scalar(select(Workspace).where(Workspace.name == id_or_name))
    return ws


def list_workspaces(s: Session) -> list[Workspace]:
    return list(s.scalars(select(Workspace).order_by(Workspace.created_at)))


def create_key(s: Session, workspace_id: str) -> str:
    """Store a new key's hash and return the key itself (the only time it is visible)."""
    key = ids.api_key()
    s.add(
        ApiKey(
            id="key-" + ids.session_id()[:16],
            workspace_id=workspace_id,
            key_hash=hash_key(key),
            prefix=key[:7],
            created_at=now(),
            revoked=False,
        )
    )
    s.flush()
    return key


def key_owner(s: Session, key: str) -> KeyOwner | None:
    row = s.execute(
        select(ApiKey.id, ApiKey.workspace_id).where(ApiKey.key_hash == hash_key(key), ApiKey.revoked.is_(False))
    ).first()
    return KeyOwner(key_id=row[0], workspace_id=row[1]) if row else None
