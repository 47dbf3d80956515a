"""Users, passwords, API tokens and browser sessions. Flushes, never commits."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from voxelhub.auth import tokencache
from voxelhub.auth.errors import InvalidCredentials, TokenRejected, UserExists, UserNotFound
from voxelhub.auth.models import ApiToken, BrowserSession, User
from voxelhub.auth.tokencache import TokenIdentity
from voxelhub.core import security
from voxelhub.core.db import utcnow

# Verifying against this keeps a login for an unknown user as slow as one for a known user.
_DUMMY_HASH = security.hash_password(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Principal:
    """Who is calling, and how they proved it."""

    user_id: uuid.UUID
    username: str
    is_admin: bool
    via: str  # "token", "session" or "system"
    session_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


def create_user(
    db: Session,
    username: str,
    password: str | None,
    *,
    email: str | None = None,
    is_admin: bool = False,
) -> User:
    if db.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserExists(f"a user named {username!r} exists already; pick another username")
    if password is not None and len(password) < security.MIN_PASSWORD_LENGTH:
        raise InvalidCredentials(
            f"the password is too short: use at least {security.MIN_PASSWORD_LENGTH} characters"
        )
    user = User(
        username=username,
        email=email,
        is_admin=is_admin,
        password_hash=security.hash_password(password) if password is not None else None,
    )
    db.add(user)
    db.flush()
    return user


def get_user(db: Session, username: str) -> User:
    user = db.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserNotFound(f"no user named {username!r}; create it with `voxelhub user create`")
    return user


def set_password(db: Session, user: User, password: str) -> None:
    if len(password) < security.MIN_PASSWORD_LENGTH:
        raise InvalidCredentials(
            f"the password is too short: use at least {security.MIN_PASSWORD_LENGTH} characters"
        )
    user.password_hash = security.hash_password(password)
    db.flush()


def authenticate(db: Session, username: str, password: str) -> User:
    """The active user with these credentials; one message for every failure."""
    user = db.scalar(select(User).where(User.username == username))
    ok = security.verify_password(
        user.password_hash if user is not None and user.password_hash else _DUMMY_HASH, password
    )
    if user is None or not ok or not user.is_active or user.password_hash is None:
        raise InvalidCredentials("wrong username or password")
    if security.needs_rehash(user.password_hash):
        user.password_hash = security.hash_password(password)
    user.last_login_at = utcnow()
    db.flush()
    return user


def create_token(
    db: Session, user: User, name: str, *, expires_in: timedelta | None
) -> tuple[str, ApiToken]:
    """A new API token for `user`; the clear token is returned once and never stored."""
    token = security.new_token()
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=security.hash_token(token),
        hint=token[-4:],
        expires_at=utcnow() + expires_in if expires_in is not None else None,
    )
    db.add(row)
    db.flush()
    return token, row


def list_tokens(db: Session, user_id: uuid.UUID) -> list[ApiToken]:
    return list(
        db.scalars(
            select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.created_at)
        )
    )


def revoke_token(db: Session, user_id: uuid.UUID, token_id: uuid.UUID) -> ApiToken:
    row = db.get(ApiToken, token_id)
    if row is None or row.user_id != user_id:
        raise TokenRejected(f"no token {token_id} of yours; list yours with GET /api/v1/tokens")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.flush()
    return row


def user_for_token(db: Session, token: str) -> User:
    """The active user a bearer token belongs to, or TokenRejected saying why."""
    return _check_token(db, token)[1]


def _check_token(db: Session, token: str) -> tuple[ApiToken, User]:
    row = db.scalar(select(ApiToken).where(ApiToken.token_hash == security.hash_token(token)))
    if row is None:
        raise TokenRejected("the API token is not valid; create one with `voxelhub token create`")
    now = utcnow()
    if row.revoked_at is not None:
        raise TokenRejected(f"the API token {row.name!r} was revoked; create a new one")
    if row.expires_at is not None and row.expires_at <= now:
        raise TokenRejected(
            f"the API token {row.name!r} expired at {row.expires_at.isoformat()}; create a new one"
        )
    user = db.get(User, row.user_id)
    if user is None or not user.is_active:
        raise TokenRejected("the API token's user is deactivated")
    # Touch at most once a minute: a busy client must not write on every request.
    if row.last_used_at is None or now - row.last_used_at > timedelta(minutes=1):
        db.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
    return row, user


def identity_for_token(db: Session, token: str) -> TokenIdentity:
    """Who a bearer token belongs to, from a cache of a few seconds (see `tokencache`)."""
    token_hash = security.hash_token(token)
    database = tokencache.database_of(db)
    cached = tokencache.CACHE.get(database, token_hash)
    if cached is not None:
        return cached
    row, user = _check_token(db, token)
    identity = TokenIdentity(user.id, user.username, user.is_admin)
    tokencache.CACHE.put(database, token_hash, identity, expires_at=row.expires_at)
    return identity


def create_session(
    db: Session, user: User, *, hours: float, ip: str | None, user_agent: str | None
) -> str:
    """A new browser session; returns the cookie value."""
    session_id = secrets.token_urlsafe(32)
    db.add(
        BrowserSession(
            user_id=user.id,
            session_hash=security.hash_token(session_id),
            expires_at=utcnow() + timedelta(hours=hours),
            ip=ip,
            user_agent=user_agent,
        )
    )
    db.flush()
    return session_id


def user_for_session(db: Session, session_id: str) -> User | None:
    row = db.scalar(
        select(BrowserSession).where(BrowserSession.session_hash == security.hash_token(session_id))
    )
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    user = db.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    return user


def end_session(db: Session, session_id: str) -> None:
    db.execute(
        update(BrowserSession)
        .where(BrowserSession.session_hash == security.hash_token(session_id))
        .values(revoked_at=utcnow())
    )


def expired_before(moment: datetime) -> bool:
    return moment <= utcnow()
