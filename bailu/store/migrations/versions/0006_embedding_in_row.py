"""pgvector: keep chunk embeddings in the row

Revision ID: 0006
Revises: 0005

pgvector's type defaults to EXTENDED storage, so next to a chunk's text, tokens and bytes the
embedding was moved out to the TOAST table, and an exact search read it back row by row
(bench/knowledge/pg_latency.py, 10k chunks: 38 ms per search; in the row: 7 ms). Rows
written before keep their layout until rewritten (VACUUM FULL kb_chunks).
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def _has_embedding() -> bool:
    bind = op.get_bind()
    return bind.dialect.name == "postgresql" and bind.execute(sa.text(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'kb_chunks' AND column_name = 'embedding'"
    )).first() is not None


def upgrade() -> None:
    if _has_embedding():
        op.execute("ALTER TABLE kb_chunks ALTER COLUMN embedding SET STORAGE MAIN")


def downgrade() -> None:
    if _has_embedding():
        op.execute("ALTER TABLE kb_chunks ALTER COLUMN embedding SET STORAGE EXTENDED")
