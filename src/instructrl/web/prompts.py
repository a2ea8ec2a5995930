"""The prompt store: every prompt sent to a served model (API or playground) is a ``ServedPrompt`` row. This
module records the training-data notice a user saw, tells whether a prompt may train future models, and
reads out the ones that may, as :class:`~instructrl.records.Prompt` records, for ``instructrl curate``
(which reads a database URL as it reads a file) and ``instructrl serve export``.

A prompt may train a model when, at the time it was sent, its user had seen the notice for that model
(at the current notice version) and neither the user nor the organization had opted out, and no opt-out
has come since: an opt-out applies to everything already stored, and such prompts never leave the store.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.orm import Session

from instructrl.records import Prompt
from instructrl.web.db import Database, iso
from instructrl.web.models import Consent, Organization, ServedPrompt, User

SOURCES = ("api", "playground", "compare")


def has_consent(session: Session, user_id: int, model: str, version: int) -> bool:
    """Whether the user saw the notice for ``model`` at ``version`` and neither they nor their org opted out."""
    row = session.execute(
        select(User.training_opt_out, Organization.training_opt_out)
        .join(Organization, Organization.id == User.org_id)
        .where(User.id == user_id)
    ).first()
    if row is None or row[0] or row[1]:
        return False
    seen = session.scalar(
        select(Consent.id).where(Consent.user_id == user_id, Consent.model == model, Consent.version == version)
    )
    return seen is not None


def accept_notice(session: Session, user_id: int, model: str, version: int) -> None:
    """Record that the user saw the notice for ``model`` (once per version)."""
    seen = session.scalar(
        select(Consent.id).where(Consent.user_id == user_id, Consent.model == model, Consent.version == version)
    )
    if seen is None:
        session.add(Consent(user_id=user_id, model=model, version=version))


def record(
    session: Session,
    *,
    org_id: int,
    user_id: int,
    source: str,
    model: str,
    prompt: Any,
    params: dict,
    response: list[str] | None,
    notice_version: int,
    api_key_id: int | None = None,
) -> ServedPrompt:
    """Store one prompt with its consent state as of now."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} is not one of {SOURCES}")
    row = ServedPrompt(
        org_id=org_id,
        user_id=user_id,
        api_key_id=api_key_id,
        source=source,
        model=model,
        prompt=prompt,
        params=params,
        response=response,
        consent=has_consent(session, user_id, model, notice_version),
        notice_version=notice_version,
    )
    session.add(row)
    session.flush()
    return row


def training_prompts(db: Database, *, org: str = "", source: str = "all", batch: int = 500) -> Iterator[Prompt]:
    """The stored prompts that may train the next round, oldest first, streamed ``batch`` rows at a time."""
    statement = (
        select(ServedPrompt, User.username, Organization.name)
        .join(User, User.id == ServedPrompt.user_id)
        .join(Organization, Organization.id == ServedPrompt.org_id)
        .where(and_(ServedPrompt.consent.is_(True), User.training_opt_out.is_(False)))
        .where(Organization.training_opt_out.is_(False))
        .order_by(ServedPrompt.id)
    )
    if org:
        statement = statement.where(Organization.name == org)
    if source == "playground":
        statement = statement.where(ServedPrompt.source.in_(("playground", "compare")))
    elif source != "all":
        statement = statement.where(ServedPrompt.source == source)
    for row, username, org_name in db.stream(statement, batch):
        yield Prompt(
            prompt=row.prompt,
            id=f"served-{row.id}",
            user_id=username,
            org_id=org_name,
            source="api" if row.source == "api" else "playground",
            type="plain" if isinstance(row.prompt, str) else "chat",
            timestamp=iso(row.created_at),
            meta={"model": row.model, "served_prompt_id": row.id, "notice_version": row.notice_version},
        )
