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
    with op.batch_alter_table('knowledge_bases') as batch:
        batch.add_column(sa.Column('reranker', sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('knowledge_bases') as batch:
        batch.drop_column('reranker')
