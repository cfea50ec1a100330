"""chunks keep their lexical tokens

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for chunks indexed before: the retriever segments those when it builds its index
    op.add_column('kb_chunks', sa.Column('tokens', sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column('kb_chunks', 'tokens')
