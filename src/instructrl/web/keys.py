"""API keys and their rate limits.

A key is ``irl-`` and 43 random URL-safe characters, shown once when it is made; the table keeps its
SHA-256 and its first 12 characters (to list and revoke it). A request names its key as
``Authorization: Bearer <key>``. Every key belongs to a user, and so to the user's organization:
what a request stores and what it may read is that organization's only.

With no key in the database, a server bound to the loopback address answers requests without a key (as
a local vLLM does; it says so at start); once a key exists, every API request needs a valid one.
"""

from __future__ import annotations

import collections
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from instructrl.web.db import Database, InputError, utcnow
from instructrl.web.models import ApiKey, User

PREFIX = "irl-"
SHOWN = 12  # characters of a key kept in clear, to tell keys apart


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who sent an API request: a key's user and organization, or nobody (a keyless local server)."""

    key_id: int | None
    user_id: int | None
    org_id: int | None

    @property
    def anonymous(self) -> bool:
        return self.user_id is None


ANONYMOUS = Caller(None, None, None)


def create_key(session: Session, username: str, name: str = "") -> tuple[str, ApiKey]:
    """A new key for ``username``: (the key, shown once; its row)."""
    user = session.scalar(select(User).where(User.username == username.strip().lower()))
    if user is None or not user.active:
        raise InputError(f"no active user {username!r}: create it first (instructrl label admin create-user)")
    key = PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(org_id=user.org_id, user_id=user.id, name=name[:200], prefix=key[:SHOWN], key_hash=_digest(key))
    session.add(row)
    session.flush()
    return key, row


def revoke_key(session: Session, prefix: str) -> ApiKey:
    """Revoke the one live key that starts with ``prefix`` (or is it)."""
    prefix = prefix.strip()
    if prefix.startswith(PREFIX) and len(prefix) > SHOWN:
        rows = list(session.scalars(select(ApiKey).where(ApiKey.key_hash == _digest(prefix))))
    else:
        rows = list(session.scalars(select(ApiKey).where(ApiKey.prefix == prefix[:SHOWN])))
    rows = [r for r in rows if r.revoked_at is None]
    if not rows:
        raise InputError(f"no live key starts with {prefix[:SHOWN]!r}")
    if len(rows) > 1:
        raise InputError(f"{len(rows)} keys start with {prefix[:SHOWN]!r}; give the whole key")
    rows[0].revoked_at = utcnow()
    return rows[0]


def any_keys(db: Database) -> bool:
    with db.read() as session:
        return bool(session.scalar(select(func.count()).select_from(ApiKey)))


def find_caller(db: Database, key: str) -> Caller | None:
    """The caller a key stands for, or None for an unknown or revoked key (or one whose user was deactivated)."""
    with db.read() as session:
        row = session.execute(
            select(ApiKey.id, ApiKey.user_id, ApiKey.org_id, ApiKey.revoked_at, User.active)
            .join(User, User.id == ApiKey.user_id)
            .where(ApiKey.key_hash == _digest(key))
        ).first()
    if row is None or row.revoked_at is not None or not row.active:
        return None
    return Caller(row.id, row.user_id, row.org_id)


class RateLimiter:
    """At most ``per_minute`` requests per key in any 60-second window (in this server process)."""

    def __init__(self, per_minute: int, window_s: float = 60.0):
        self.per_minute, self.window_s = per_minute, window_s
        self._seen: dict[object, collections.deque] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def allow(self, who: object) -> float:
        """0 if the request may go, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            seen = self._seen[who]
            while seen and now - seen[0] >= self.window_s:
                seen.popleft()
            if len(seen) >= self.per_minute:
                return self.window_s - (now - seen[0])
            seen.append(now)
            return 0.0
