"""Who is calling: a bearer token or a browser session (with CSRF protection)."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import Depends, Request

from voxelhub.auth import service
from voxelhub.auth.errors import PermissionDenied
from voxelhub.auth.models import User
from voxelhub.auth.tokencache import TokenIdentity
from voxelhub.core import security
from voxelhub.core.deps import DbDep, SettingsDep
from voxelhub.core.errors import Forbidden, Unauthenticated

SESSION_COOKIE = "vxh_session"
CSRF_HEADER = "x-csrf-token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class CsrfRejected(Forbidden):
    code = "csrf_rejected"


def client_ip(request: Request) -> str | None:
    """The peer address, or None when it is not an IP (e.g. an in-process test client)."""
    if request.client is None:
        return None
    try:
        return str(ipaddress.ip_address(request.client.host))
    except ValueError:
        return None


def _principal(
    request: Request,
    user: User | TokenIdentity,
    via: str,
    session_id: str | None = None,
) -> service.Principal:
    return service.Principal(
        user_id=user.user_id if isinstance(user, TokenIdentity) else user.id,
        username=user.username,
        is_admin=user.is_admin,
        via=via,
        session_id=session_id,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


def _from_bearer(request: Request, db: DbDep, header: str) -> service.Principal:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated(
            "the Authorization header must be 'Bearer <token>'; "
            "create a token with `voxelhub token create --user NAME`"
        )
    return _principal(request, service.identity_for_token(db, token.strip()), "token")


def optional_principal(
    request: Request, db: DbDep, settings: SettingsDep
) -> service.Principal | None:
    """The caller, or None when the request carries no valid credentials at all."""
    header = request.headers.get("authorization")
    if header:
        return _from_bearer(request, db, header)
    session_id = request.cookies.get(SESSION_COOKIE)
    user = service.user_for_session(db, session_id) if session_id else None
    if user is None or session_id is None:
        return None
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not security.verify_csrf(settings.key(), session_id, sent):
            raise CsrfRejected(
                "this request came with a session cookie but without a valid "
                f"{CSRF_HEADER.upper()} header; send the csrf_token returned at login"
            )
    return _principal(request, user, "session", session_id)


OptionalPrincipalDep = Annotated[service.Principal | None, Depends(optional_principal)]


def current_principal(principal: OptionalPrincipalDep) -> service.Principal:
    if principal is None:
        raise Unauthenticated(
            "sign in first: send 'Authorization: Bearer <token>' or log in at /login"
        )
    return principal


PrincipalDep = Annotated[service.Principal, Depends(current_principal)]


def admin_principal(principal: PrincipalDep) -> service.Principal:
    if not principal.is_admin:
        raise PermissionDenied("this needs an administrator account")
    return principal


AdminDep = Annotated[service.Principal, Depends(admin_principal)]
