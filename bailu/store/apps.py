"""Apps and their published versions. A version is an immutable snapshot of the spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bailu import ids
from bailu.store.tables import App, AppVersion
from bailu.store.workspaces import now


@dataclass(frozen=True)
class PublishedApp:
    app_id: str
    workspace_id: str
    version: int
    spec: dict[str, Any]


def create_app(s: Session, workspace_id: str, spec: dict[str, Any]) -> App:
    ts = now()
    app = App(
        id=ids.app_id(),
        workspace_id=workspace_id,
        name=spec["name"],
        type=spec["type"],
        draft_spec=spec,
        created_at=ts,
        updated_at=ts,
    )
    s.add(app)
    s.flush()
    return app


def get_app(s: Session, workspace_id: str, app_id: str) -> App | None:
    app = s.get(App, app_id)
    return app if app is not None and app.workspace_id == workspace_id else None


def update_draft(s: Session, app: App, spec: dict[str, Any]) -> None:
    app.draft_spec = spec
    app.name = spec["name"]
    app.type = spec["type"]
    app.updated_at = now()


def publish(s: Session, app: App) -> int:
    """Snapshot the draft as the next version; returns the version number."""
    latest = s.scalar(select(func.max(AppVersion.version)).where(AppVersion.app_id == app.id)) or 0
    version = latest + 1
    s.add(AppVersion(app_id=app.id, version=version, spec=dict(app.draft_spec), created_at=now()))
    s.flush()
    return version


def latest_published(s: Session, workspace_id: str, app_id: str) -> PublishedApp | None:
    """The app's highest published version, or None if unpublished or not in this workspace."""
    row = s.execute(
        select(AppVersion.version, AppVersion.spec)
        .join(App, App.id == AppVersion.app_id)
        .where(App.id == app_id, App.workspace_id == workspace_id)
        .order_by(AppVersion.version.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return PublishedApp(app_id=app_id, workspace_id=workspace_id, version=row[0], spec=row[1])


def list_apps(s: Session, workspace_id: str) -> list[App]:
    return list(s.scalars(select(App).where(App.workspace_id == workspace_id).order_by(App.created_at)))
