"""The tables of the web apps (SQLAlchemy 2). Every row that belongs to a team hangs off an organization,
and every query for a page filters by it: nothing of one organization is visible from another.

Tasks and labels are kept generic here (a ``kind`` and JSON payloads): the app that serves them (the
labeling workbench) knows what a payload means. A change to a table needs a migration under
``migrations/versions`` (tests/web/test_db.py checks that the migrations build exactly these tables).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from instructrl.web.db import utcnow

# an applicant sees only the screening tests of their organization, until an admin makes them a labeler
ROLES = ("admin", "labeler", "applicant")

# constraint names that are the same on every database, so that later migrations can name them
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # the organization's prompts never leave the store for training (its admin says so in the playground)
    training_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # one of ROLES
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    training_opt_out: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class WebSession(Base):
    """A signed-in browser: the cookie holds the token, the table only its SHA-256."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)


class LoginAttempt(Base):
    """Every sign-in attempt, for rate limiting by user name and by address."""

    __tablename__ = "login_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    success: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_projects_org_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    # what comes first when criteria conflict: "helpfulness" (training data) or "truthfulness_harmlessness"
    # (evaluation data), as the paper's labelers were told
    priority: Mapped[str] = mapped_column(String(32), default="helpfulness")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class InstructionVersion(Base):
    """One version of a project's labeling instructions; each label records the one it was made under."""

    __tablename__ = "instruction_versions"
    __table_args__ = (UniqueConstraint("project_id", "version", name="uq_instruction_versions_project_id_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Task(Base):
    """One item to label: a prompt, and for a ranking its responses (``[{"text", "policy", "sample_id"}]``)."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_project_id_kind", "project_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    kind: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(200), default="")  # the prompt id it was imported with
    prompt: Mapped[Any] = mapped_column(JSON)  # text or chat messages
    responses: Mapped[Any] = mapped_column(JSON, nullable=True)
    meta: Mapped[Any] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # the ranking an admin marked gold (ranks in the imported order), which labelers' rankings are checked
    # against; SQL NULL when the task is not gold (none_as_null: not a JSON null, so IS NULL finds it)
    gold: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    gold_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Assignment(Base):
    """A task given to one user; ``order`` is the shuffled order in which that user sees the responses."""

    __tablename__ = "assignments"
    __table_args__ = (
        UniqueConstraint("task_id", "user_id", name="uq_assignments_task_id_user_id"),
        Index("ix_assignments_user_id_status", "user_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | done | skipped
    order: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Label(Base):
    """What one user gave for one assignment: a payload (with its schema version), or a skip and its reason."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_project_id_kind", "project_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    payload: Mapped[Any] = mapped_column(JSON, nullable=True)
    schema_version: Mapped[int] = mapped_column(Integer)
    instruction_version_id: Mapped[int | None] = mapped_column(ForeignKey("instruction_versions.id"), nullable=True)
    skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    opened_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)  # when the page was first shown
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Draft(Base):
    """Unsubmitted work on an assignment, saved as the user types so that a lost connection loses nothing."""

    __tablename__ = "drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignments.id"), unique=True)
    payload: Mapped[Any] = mapped_column(JSON)
    opened_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ScreeningTest(Base):
    """A screening test for applicants (the paper's four criteria), with the cut-offs its report applies."""

    __tablename__ = "screening_tests"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_screening_tests_org_id_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    topics: Mapped[Any] = mapped_column(JSON)  # topics and groups an applicant may declare themselves able to judge
    flag_cutoff: Mapped[float] = mapped_column(Float)  # share of flags agreeing with the researchers'
    rank_cutoff: Mapped[float] = mapped_column(Float)  # pairwise agreement with the researchers' rankings
    demo_cutoff: Mapped[float] = mapped_column(Float)  # mean 1-7 score of the sensitive demonstrations
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ScreeningItem(Base):
    """One item of a screening test: flag a response as sensitive or not, rank responses, or write a response;
    ``reference`` holds the researchers' answer (``{"sensitive": bool}``, ``{"ranks": [...]}``, or None)."""

    __tablename__ = "screening_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("screening_tests.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # flag | rank | demonstrate
    prompt: Mapped[Any] = mapped_column(JSON)
    responses: Mapped[Any] = mapped_column(JSON, nullable=True)
    reference: Mapped[Any] = mapped_column(JSON, nullable=True)


class ScreeningAttempt(Base):
    """One applicant's take of a test: the topics they declared and when they submitted."""

    __tablename__ = "screening_attempts"
    __table_args__ = (UniqueConstraint("test_id", "user_id", name="uq_screening_attempts_test_id_user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("screening_tests.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | submitted
    topics: Mapped[Any] = mapped_column(JSON, nullable=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ScreeningAnswer(Base):
    """An applicant's answer to one item; a demonstration gets its 1-7 score from a reviewer later."""

    __tablename__ = "screening_answers"
    __table_args__ = (UniqueConstraint("attempt_id", "item_id", name="uq_screening_answers_attempt_id_item_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("screening_attempts.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("screening_items.id"))
    answer: Mapped[Any] = mapped_column(JSON)
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ApiKey(Base):
    """A key of the OpenAI-compatible API; the table keeps its SHA-256 and its first characters only."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Consent(Base):
    """A user saw the notice that what they submit to ``model`` may train future models (one notice version)."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_id", "model", "version", name="uq_consents_user_id_model_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    accepted_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ServedPrompt(Base):
    """One prompt sent to a served model (API or playground) and what the model answered. ``consent`` is the
    state when it was sent: the user had seen the notice for that model, and neither the user nor the
    organization had opted out. Only such prompts (and only while no opt-out followed) leave the store."""

    __tablename__ = "served_prompts"
    __table_args__ = (Index("ix_served_prompts_org_id_created_at", "org_id", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # api | playground | compare
    model: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[Any] = mapped_column(JSON)  # text (completions) or chat messages
    params: Mapped[Any] = mapped_column(JSON, default=dict)
    response: Mapped[Any] = mapped_column(JSON, nullable=True)  # the texts of the n choices
    consent: Mapped[bool] = mapped_column(Boolean)
    notice_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Comparison(Base):
    """A side-by-side vote in the playground: one prompt, two models' answers (their sides drawn at random by
    the server), and the user's pick: ``left``, ``right``, ``tie`` or ``both_bad``."""

    __tablename__ = "comparisons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("served_prompts.id"))
    models: Mapped[Any] = mapped_column(JSON)  # [left, right]
    responses: Mapped[Any] = mapped_column(JSON)  # [left, right]
    vote: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    voted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
