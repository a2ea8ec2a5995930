"""Screening: tests for applicants (flag sensitive speech, rank, write sensitive demonstrations, declare the
topics they can judge), their items, each applicant's attempt and answers (with a reviewer's score).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "screening_tests",
        _id(),
        sa.Column("org_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=False),
        sa.Column("flag_cutoff", sa.Float(), nullable=False),
        sa.Column("rank_cutoff", sa.Float(), nullable=False),
        sa.Column("demo_cutoff", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name="fk_screening_tests_org_id_organizations"),
        sa.PrimaryKeyConstraint("id", name="pk_screening_tests"),
        sa.UniqueConstraint("org_id", "name", name="uq_screening_tests_org_id_name"),
    )
    op.create_index("ix_screening_tests_org_id", "screening_tests", ["org_id"])
    op.create_table(
        "screening_items",
        _id(),
        sa.Column("test_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("prompt", sa.JSON(), nullable=False),
        sa.Column("responses", sa.JSON(), nullable=True),
        sa.Column("reference", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["test_id"], ["screening_tests.id"], name="fk_screening_items_test_id_screening_tests"),
        sa.PrimaryKeyConstraint("id", name="pk_screening_items"),
    )
    op.create_index("ix_screening_items_test_id", "screening_items", ["test_id"])
    op.create_table(
        "screening_attempts",
        _id(),
        sa.Column("test_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("topics", sa.JSON(), nullable=True),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("submitted_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["test_id"], ["screening_tests.id"], name="fk_screening_attempts_test_id_screening_tests"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_screening_attempts_user_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_screening_attempts"),
        sa.UniqueConstraint("test_id", "user_id", name="uq_screening_attempts_test_id_user_id"),
    )
    op.create_index("ix_screening_attempts_user_id", "screening_attempts", ["user_id"])
    op.create_table(
        "screening_answers",
        _id(),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["attempt_id"], ["screening_attempts.id"], name="fk_screening_answers_attempt_id_screening_attempts"
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["screening_items.id"], name="fk_screening_answers_item_id_screening_items"
        ),
        sa.ForeignKeyConstraint(["reviewer_id"], ["users.id"], name="fk_screening_answers_reviewer_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_screening_answers"),
        sa.UniqueConstraint("attempt_id", "item_id", name="uq_screening_answers_attempt_id_item_id"),
    )


def downgrade() -> None:
    for table in ("screening_answers", "screening_attempts", "screening_items", "screening_tests"):
        op.drop_table(table)
