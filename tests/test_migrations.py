"""Migrations: from empty, and from the oldest revision with rows in it, on both backends."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from bailu.store.db import Database, alembic_config
from bailu.store.tables import Base


def revisions() -> list[str]:
    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def test_head_matches_the_tables(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    names = set(inspect(db.engine).get_table_names())
    assert set(Base.metadata.tables) <= names
    db.dispose()


def test_upgrade_from_oldest_revision_keeps_rows(database_url: str) -> None:
    db = Database(database_url)
    oldest = revisions()[0]
    db.migrate(oldest)
    with db.engine.begin() as conn:
        conn.execute(text("insert into workspaces (id, name, is_default, created_at) values ('llm-old', 'old', true, CURRENT_TIMESTAMP)"))
        conn.execute(text("insert into apps (id, workspace_id, name, type, draft_spec, created_at, updated_at) "
                          "values ('a1', 'llm-old', 'x', 'agent', '{\"name\": \"x\"}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    db.migrate("head")
    with db.engine.connect() as conn:
        assert conn.execute(text("select name from workspaces where id = 'llm-old'")).scalar() == "old"
        assert conn.execute(text("select count(*) from apps")).scalar() == 1
    db.dispose()


def test_migrations_ship_in_the_package() -> None:
    import bailu

    versions = Path(bailu.__file__).parent / "store" / "migrations" / "versions"
    assert any(p.name.startswith("0001") for p in versions.glob("*.py"))
