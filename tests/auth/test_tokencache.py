"""The token cache: revocation, deactivation and expiry still take effect in time."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from tests.conftest import Account
from voxelhub.auth import service, tokencache
from voxelhub.auth.models import User
from voxelhub.core.db import session_scope, utcnow

ME = "/api/v1/auth/me"


@pytest.fixture
def short_ttl(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(tokencache, "TTL_S", 0.5)
    return 0.5


def _elsewhere(database_url: str, sql: str, **params: object) -> None:
    """A change made by another process: plain SQL, no ORM, a connection of its own."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def test_a_token_revoked_elsewhere_is_refused_within_the_ttl(
    client: TestClient, make_user, database_url: str, short_ttl: float
) -> None:
    lena: Account = make_user("lena")
    assert client.get(ME, headers=lena.headers).status_code == 200
    _elsewhere(
        database_url,
        "UPDATE api_tokens SET revoked_at = now() WHERE user_id = :u",
        u=lena.id,
    )
    # Until the cached answer lapses the token still works: the documented window.
    assert client.get(ME, headers=lena.headers).status_code == 200
    time.sleep(short_ttl + 0.1)
    refused = client.get(ME, headers=lena.headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["message"]


def test_revoking_through_this_process_takes_effect_at_once(client: TestClient, make_user) -> None:
    mia: Account = make_user("mia")
    created = client.post("/api/v1/tokens", json={"name": "ci"}, headers=mia.headers).json()
    new = {"Authorization": f"Bearer {created['token']}"}
    assert client.get(ME, headers=new).status_code == 200  # now cached
    client.delete(f"/api/v1/tokens/{created['info']['id']}", headers=mia.headers)
    assert client.get(ME, headers=new).status_code == 401


def test_deactivating_a_user_takes_effect_at_once(
    client: TestClient, make_user, database_url: str
) -> None:
    ned: Account = make_user("ned")
    assert client.get(ME, headers=ned.headers).status_code == 200
    with session_scope(database_url) as db:
        db.get_one(User, ned.id).is_active = False
    assert client.get(ME, headers=ned.headers).status_code == 401


def test_a_cached_answer_never_outlives_the_token(client: TestClient, database_url: str) -> None:
    client.get(ME)  # the app's first request is slow on a busy machine: not within the window
    with session_scope(database_url) as db:
        user = service.create_user(db, "olga", "long-enough-password")
        token, row = service.create_token(db, user, "brief", expires_in=timedelta(seconds=1))
        row.expires_at = expires = utcnow() + timedelta(seconds=1.5)
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(ME, headers=headers).status_code == 200
    time.sleep(max((expires - utcnow()).total_seconds(), 0) + 0.2)
    refused = client.get(ME, headers=headers)
    assert refused.status_code == 401
    assert "expired" in refused.json()["message"]


def test_a_cached_token_needs_no_query(client: TestClient, make_user, database_url: str) -> None:
    pia: Account = make_user("pia")
    assert client.get(ME, headers=pia.headers).status_code == 200
    with session_scope(database_url) as db:
        found = tokencache.CACHE.get(tokencache.database_of(db), _hash(pia.token))
    assert found is not None and found.username == "pia" and found.user_id == pia.id


def _hash(token: str) -> str:
    from voxelhub.core import security

    return security.hash_token(token)
