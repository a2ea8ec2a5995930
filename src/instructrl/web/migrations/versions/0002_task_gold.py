"""Gold rankings: a task can carry the ranking an admin marked gold, and when it was marked.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # two nullable columns: SQLite adds them in place (ALTER TABLE ADD COLUMN), no table rebuild
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("gold", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("gold_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("gold_at")
        batch.drop_column("gold")
