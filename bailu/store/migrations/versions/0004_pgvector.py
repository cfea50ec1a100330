"""on PostgreSQL with pgvector: chunk embeddings in a vector column

Revision ID: 0004
Revises: 0003

Only where the server offers the ``vector`` extension (pgvector): the extension is created
and ``kb_chunks.embedding`` (``vector``, any dimension) added; dense retrieval then runs in
the database. Elsewhere (SQLite, PostgreSQL without pgvector, or a database user that may not
create the extension when it is not created already) this revision changes nothing and vectors
are searched in process.
"""

import logging

from alembic import op
import sqlalchemy as sa

log = logging.getLogger("bailu.store")


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    if bind.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first() is None:
        if bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")).first() is None:
            return
        try:
            with bind.begin_nested():  # a savepoint: creating it needs rights a plain owner may lack
                bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
        except sa.exc.DBAPIError as exc:
            log.warning("pgvector is available but could not be created (%s): vectors stay in process. "
                        "A superuser can run CREATE EXTENSION vector; see docs/knowledge.md.", exc.orig)
            return
    op.execute("ALTER TABLE kb_chunks ADD COLUMN IF NOT EXISTS embedding vector")
    # chunks indexed before: their float32 bytes, copied over in the text form pgvector reads
    rows = bind.execute(sa.text("SELECT id, vector FROM kb_chunks WHERE vector IS NOT NULL AND embedding IS NULL")).all()
    for start in range(0, len(rows), 1000):
        bind.execute(
            sa.text("UPDATE kb_chunks SET embedding = CAST(:v AS vector) WHERE id = :id"),
            [{"id": cid, "v": _literal(bytes(vec))} for cid, vec in rows[start : start + 1000]],
        )


def _literal(vector: bytes) -> str:
    import numpy as np

    return "[" + ",".join(repr(float(v)) for v in np.frombuffer(vector, dtype=np.float32)) + "]"


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE kb_chunks DROP COLUMN IF EXISTS embedding")
