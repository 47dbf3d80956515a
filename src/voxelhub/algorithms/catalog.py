"""The platform's own (built-in) algorithms: registered with the executor, listed in the
registry as public algorithms."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from voxelhub.algorithms import service
from voxelhub.algorithms.models import Algorithm
from voxelhub.algorithms.schemas import AlgorithmCreate, Interface, Resources, VersionCreate
from voxelhub.auth.service import Principal

logger = logging.getLogger(__name__)


def builtin_specs() -> dict[str, Any]:
    try:
        from voxelhub.algorithms.builtins import BUILTINS
    except ImportError:  # pragma: no cover - the package ships with the platform
        return {}
    return dict(BUILTINS)


def register_builtins() -> None:
    """Make the built-in algorithms runnable in this process."""
    from voxelhub.algorithms.builtins import mri_reconstruction, register_all
    from voxelhub.core.settings import get_settings

    mri_reconstruction.configure(outbox=get_settings().recon_outbox)
    register_all()


def _field(spec: Any, name: str) -> Any:
    return spec[name] if isinstance(spec, dict) else getattr(spec, name)


def sync_builtins(db: Session, owner: Principal) -> int:
    """Add the built-in algorithms missing from the registry (public, owned by `owner`), and
    bring the registered ones up to this release's interfaces and resources."""
    added = 0
    for name, spec in builtin_specs().items():
        existing = db.scalar(select(Algorithm).where(Algorithm.slug == name))
        if existing is not None:
            _refresh(db, existing, spec)
            continue
        algorithm = service.create_algorithm(
            db,
            owner,
            AlgorithmCreate(
                slug=name,
                title=_field(spec, "title"),
                description=_field(spec, "description"),
                public=True,
                max_concurrent_jobs=8,
            ),
        )
        resources = _field(spec, "resources")
        service.add_version(
            db,
            algorithm,
            VersionCreate(
                kind="builtin",
                entrypoint=name,
                inputs=[Interface.model_validate(_as_dict(i)) for i in _field(spec, "inputs")],
                outputs=[Interface.model_validate(_as_dict(o)) for o in _field(spec, "outputs")],
                resources=Resources.model_validate(_as_dict(resources)),
            ),
        )
        added += 1
    return added


def _refresh(db: Session, algorithm: Algorithm, spec: Any) -> None:
    """A built-in's version is the platform's code: a new release may change its interfaces
    or resources (e.g. a GPU queue with a CPU fallback), and new jobs should see them."""
    version = service.latest_version(db, algorithm)
    if version is None or version.kind != "builtin":
        return
    fresh = {
        "inputs": [
            Interface.model_validate(_as_dict(i)).model_dump(mode="json")
            for i in _field(spec, "inputs")
        ],
        "outputs": [
            Interface.model_validate(_as_dict(o)).model_dump(mode="json")
            for o in _field(spec, "outputs")
        ],
        "resources": Resources.model_validate(_as_dict(_field(spec, "resources"))).model_dump(
            mode="json"
        ),
    }
    for attribute, value in fresh.items():
        if getattr(version, attribute) != value:
            setattr(version, attribute, value)


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if hasattr(value, "model_dump"):
        return dict(value.model_dump())
    return dict(vars(value))
