"""knowledge bases name their reranker

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('knowledge_bases', sa.Column('reranker', sa.String(length=100), nullable=True))


def downgrade() -> None:
    # plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35): a batch rebuild of the table would
    # cascade-delete its files and chunks through their foreign keys
    op.drop_column('knowledge_bases', 'reranker')
