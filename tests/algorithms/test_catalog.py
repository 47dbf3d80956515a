"""The registry's built-ins follow the release: added when missing, refreshed when changed."""

from __future__ import annotations

from sqlalchemy import select

from tests.conftest import Account
from voxelhub.algorithms import service
from voxelhub.algorithms.catalog import sync_builtins
from voxelhub.algorithms.models import Algorithm
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope


def test_registered_builtins_take_the_release_s_resources(
    database_url: str, admin: Account
) -> None:
    principal = Principal(user_id=admin.id, username="admin", is_admin=True, via="system")
    with session_scope(database_url) as db:
        assert sync_builtins(db, principal) > 0
    with session_scope(database_url) as db:  # as registered by an earlier release
        algorithm = db.scalars(select(Algorithm).where(Algorithm.slug == "mri-recon-grappa")).one()
        version = service.latest_version(db, algorithm)
        assert version is not None
        released = dict(version.resources)
        assert released.get("fallback_queue") == "cpu"
        version.resources = {"queue": "cpu"}
    with session_scope(database_url) as db:
        assert sync_builtins(db, principal) == 0
    with session_scope(database_url) as db:
        algorithm = db.scalars(select(Algorithm).where(Algorithm.slug == "mri-recon-grappa")).one()
        version = service.latest_version(db, algorithm)
        assert version is not None and version.resources == released
