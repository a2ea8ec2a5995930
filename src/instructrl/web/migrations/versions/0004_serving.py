"""Serving: API keys, the training-data notice each user saw per model, every prompt sent to a served
model (with its consent state), side-by-side votes, and opt-outs of users and organizations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _fk(column: str, table: str, source: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{table}.id"], name=f"fk_{source}_{column}_{table}")


def upgrade() -> None:
    # a column with a constant default: SQLite adds it in place, PostgreSQL without rewriting the table
    # (ALTER TABLE ADD COLUMN, not a batch rebuild: rebuilding a table others point at breaks their keys)
    for table in ("organizations", "users"):
        op.add_column(table, sa.Column("training_opt_out", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "api_keys",
        _id(),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        _fk("org_id", "organizations", "api_keys"),
        _fk("user_id", "users", "api_keys"),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_org_id", "api_keys", ["org_id"])
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "consents",
        _id(),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(), nullable=False),
        _fk("user_id", "users", "consents"),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
        sa.UniqueConstraint("user_id", "model", "version", name="uq_consents_user_id_model_version"),
    )
    op.create_index("ix_consents_user_id", "consents", ["user_id"])
    op.create_table(
        "served_prompts",
        _id(),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("prompt", sa.JSON(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("notice_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        _fk("org_id", "organizations", "served_prompts"),
        _fk("user_id", "users", "served_prompts"),
        _fk("api_key_id", "api_keys", "served_prompts"),
        sa.PrimaryKeyConstraint("id", name="pk_served_prompts"),
    )
    op.create_index("ix_served_prompts_user_id", "served_prompts", ["user_id"])
    op.create_index("ix_served_prompts_org_id_created_at", "served_prompts", ["org_id", "created_at"])
    op.create_table(
        "comparisons",
        _id(),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("prompt_id", sa.Integer(), nullable=False),
        sa.Column("models", sa.JSON(), nullable=False),
        sa.Column("responses", sa.JSON(), nullable=False),
        sa.Column("vote", sa.String(16), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("voted_at", sa.DateTime(), nullable=True),
        _fk("org_id", "organizations", "comparisons"),
        _fk("user_id", "users", "comparisons"),
        _fk("prompt_id", "served_prompts", "comparisons"),
        sa.PrimaryKeyConstraint("id", name="pk_comparisons"),
    )
    op.create_index("ix_comparisons_org_id", "comparisons", ["org_id"])
    op.create_index("ix_comparisons_user_id", "comparisons", ["user_id"])


def downgrade() -> None:
    for table in ("comparisons", "served_prompts", "consents", "api_keys"):
        op.drop_table(table)
    for table in ("users", "organizations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("training_opt_out")
