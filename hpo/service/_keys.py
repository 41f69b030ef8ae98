"""API keys and dashboard sessions: create, list, revoke, and resolve a caller.

A key is ``hpo_`` and 43 URL-safe characters (256 random bits). Only its SHA-256 is stored;
the key is returned once, by :func:`create_key`. A session is a second random token, made
when someone signs in to the dashboard with a key, stored the same way, with a CSRF token
and an expiry; revoking the key ends its sessions.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from .._errors import DuplicateKey, InvalidSpec, KeyNotFound
from ..access import Principal
from ..schemas import ApiKeyPublic
from ..storage import ApiKeyRow, Database, SessionRow, utcnow
from ..vocabulary import Role
from ._common import find_study
from ._lifecycle import note, transact

KEY_PREFIX = "hpo_"
NAME_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
#: patterns one worker key may list
MAX_KEY_STUDIES = 100
#: an operator-chosen key (HPO_ADMIN_KEY) must be at least this long
MIN_KEY_CHARS = 32


def digest(secret: str) -> str:
    """The SHA-256 (hex) under which a key or session token is stored."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _public(row: ApiKeyRow) -> ApiKeyPublic:
    return ApiKeyPublic(
        name=row.name,
        role=Role(row.role),
        prefix=row.prefix,
        studies=row.studies,
        builtin=row.builtin,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def _check_new_key(name: str, role: str, studies: Sequence[str] | None) -> Role:
    if not NAME_RULE.fullmatch(name):
        raise InvalidSpec(
            f"key name {name[:80]!r} is not allowed: use 1-64 letters, digits, '.', '_', '@' "
            "or '-', starting with a letter or digit"
        )
    try:
        parsed = Role(role)
    except ValueError:
        raise InvalidSpec(
            f"role {str(role)[:40]!r} is unknown; choose one of {', '.join(r.value for r in Role)}"
        ) from None
    if studies is not None:
        if parsed is not Role.WORKER:
            raise InvalidSpec("only a worker key can be limited to studies; drop 'studies'")
        if not 1 <= len(studies) <= MAX_KEY_STUDIES or not all(
            isinstance(s, str) and 1 <= len(s) <= 128 and "\x00" not in s for s in studies
        ):
            raise InvalidSpec(
                f"studies must be 1 to {MAX_KEY_STUDIES} study names or patterns like 'bert-*' "
                "(each 1-128 characters)"
            )
    return parsed


def create_key(
    db: Database,
    *,
    name: str,
    role: str,
    studies: Sequence[str] | None = None,
    builtin: bool = False,
    secret: str | None = None,
) -> tuple[ApiKeyPublic, str]:
    """A new key; returns its record and the key itself, which is never shown again.

    Args:
        studies: for a worker key, the study names (or ``fnmatch`` patterns) it may run.
        builtin: made by a controller for its own dispatcher.
        secret: use this key instead of a random one (an operator's ``HPO_ADMIN_KEY``).
    """
    parsed = _check_new_key(name, role, studies)
    if secret is not None and len(secret) < MIN_KEY_CHARS:
        raise InvalidSpec(
            f"the key given for {name!r} is {len(secret)} characters; use at least "
            f"{MIN_KEY_CHARS} random ones (for example: openssl rand -hex 32)"
        )
    key = secret if secret is not None else KEY_PREFIX + secrets.token_urlsafe(32)

    def create(session: Session) -> ApiKeyPublic:
        if session.scalar(select(ApiKeyRow.id).where(ApiKeyRow.name == name)) is not None:
            raise DuplicateKey(
                f"an API key named {name!r} already exists (names stay taken after a revoke, "
                "so studies keep saying who made them); choose another name"
            )
        row = ApiKeyRow(
            name=name,
            role=parsed.value,
            prefix=key[:8],
            key_hash=digest(key),
            studies=list(studies) if studies is not None else None,
            builtin=builtin,
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        note(session, logging.INFO, "API key %s created with role %s", name, parsed.value)
        return _public(row)

    return transact(db, create, write=True), key


def ensure_key(db: Database, *, name: str, role: str, secret: str) -> bool:
    """Make sure ``secret`` is a live key (``HPO_ADMIN_KEY`` at start); False if it was."""
    hashed = digest(secret)
    found = transact(
        db,
        lambda s: s.execute(
            select(ApiKeyRow.name, ApiKeyRow.revoked_at).where(ApiKeyRow.key_hash == hashed)
        ).first(),
    )
    if found is None:
        create_key(db, name=name, role=role, secret=secret)
        return True
    if found.revoked_at is not None:
        raise InvalidSpec(
            f"the key given for {name!r} is key {found.name!r}, which was revoked; generate a "
            "new one (openssl rand -hex 32)"
        )
    return False


def list_keys(db: Database, *, revoked: bool = True) -> list[ApiKeyPublic]:
    """Every key, oldest first (with ``revoked=False``, the live ones only)."""

    def read(session: Session) -> list[ApiKeyPublic]:
        query = select(ApiKeyRow).order_by(ApiKeyRow.id)
        if not revoked:
            query = query.where(ApiKeyRow.revoked_at.is_(None))
        return [_public(row) for row in session.scalars(query)]

    return transact(db, read)


def revoke_key(db: Database, *, name: str) -> ApiKeyPublic:
    """Revoke a key by name and end its dashboard sessions; revoking twice is harmless."""

    def revoke(session: Session) -> ApiKeyPublic:
        row = session.scalar(select(ApiKeyRow).where(ApiKeyRow.name == name).with_for_update())
        if row is None:
            raise KeyNotFound(f"no API key named {name[:80]!r}; `hpo keys list` shows them")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            note(session, logging.INFO, "API key %s revoked", name)
        session.execute(delete(SessionRow).where(SessionRow.key_id == row.id))
        return _public(row)

    return transact(db, revoke, write=True)


def operator_keys_exist(db: Database) -> bool:
    """Whether any live key was made by an operator (the dispatchers' own keys do not count:
    a controller with none of these may run with access control off on loopback)."""
    count = transact(
        db,
        lambda s: s.scalar(
            select(func.count())
            .select_from(ApiKeyRow)
            .where(ApiKeyRow.revoked_at.is_(None), ApiKeyRow.builtin.is_(False))
        ),
    )
    return bool(count)


def _principal(row: ApiKeyRow) -> Principal:
    return Principal(
        name=row.name,
        role=Role(row.role),
        key_id=row.id,
        studies=tuple(row.studies) if row.studies is not None else None,
    )


def authenticate(db: Database, *, key: str) -> Principal | None:
    """The principal of a live key; ``None`` for an unknown or revoked one."""

    def read(session: Session) -> Principal | None:
        row = session.scalar(
            select(ApiKeyRow).where(
                ApiKeyRow.key_hash == digest(key), ApiKeyRow.revoked_at.is_(None)
            )
        )
        return None if row is None else _principal(row)

    return transact(db, read)


def create_session(db: Database, *, key_id: int, lifetime: timedelta) -> tuple[str, str]:
    """A dashboard session for a key: ``(cookie token, CSRF token)``; expired ones go."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)

    def create(session: Session) -> None:
        now = utcnow()
        session.execute(delete(SessionRow).where(SessionRow.expires_at < now))
        session.add(
            SessionRow(
                token_hash=digest(token),
                key_id=key_id,
                csrf=csrf,
                created_at=now,
                expires_at=now + lifetime,
            )
        )

    transact(db, create, write=True)
    return token, csrf


def session_principal(db: Database, *, token: str) -> tuple[Principal, str] | None:
    """``(principal, CSRF token)`` of a live session; ``None`` if it ended."""

    def read(session: Session) -> tuple[Principal, str] | None:
        found = session.execute(
            select(ApiKeyRow, SessionRow.csrf)
            .join(SessionRow, SessionRow.key_id == ApiKeyRow.id)
            .where(
                SessionRow.token_hash == digest(token),
                SessionRow.expires_at > utcnow(),
                ApiKeyRow.revoked_at.is_(None),
            )
        ).first()
        return None if found is None else (_principal(found[0]), found[1])

    return transact(db, read)


def end_session(db: Database, *, token: str) -> None:
    transact(
        db,
        lambda s: s.execute(delete(SessionRow).where(SessionRow.token_hash == digest(token))),
        write=True,
    )


def study_owner(db: Database, *, ref: str | int) -> tuple[str, str | None]:
    """A study's name and the key that created it (for the access rules)."""

    def read(session: Session) -> tuple[str, str | None]:
        row = find_study(session, ref)
        return row.name, row.created_by

    return transact(db, read)


def revoke_builtin(db: Database, *, name: str) -> None:
    """Retire a controller's own dispatcher key when the controller stops."""
    transact(
        db,
        lambda s: s.execute(
            update(ApiKeyRow)
            .where(ApiKeyRow.name == name, ApiKeyRow.builtin.is_(True))
            .values(revoked_at=utcnow())
        ),
        write=True,
    )


__all__ = [
    "authenticate",
    "digest",
    "create_key",
    "create_session",
    "end_session",
    "ensure_key",
    "list_keys",
    "operator_keys_exist",
    "revoke_builtin",
    "revoke_key",
    "session_principal",
    "study_owner",
]
