"""Multi-model endpoints serving MONAI bundle algorithms, each on a warm sandboxed process.

Besides model files, a model of an endpoint may be an uploaded bundle algorithm: it is
added with `PUT /api/v1/endpoints/{endpoint}/models/{model}` and the form field
`algorithm` (its slug), and kept as a small reference document under
`endpoints/{endpoint}/{model}.algorithm`, so adding one needs no restart. On first use the
algorithm's latest version is unpacked and started as a `WarmBundle` (its own sandboxed
process, as for jobs); the endpoint's `ModelCache` counts the process's resident memory
against the budget, measured when it is ready and again after every call (it grows with the
first inference), and closes the least recently used processes when the budget is exceeded.
A newer version of the algorithm is loaded on its next call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from voxelhub.algorithms import endpoints, service
from voxelhub.algorithms.realtime import AlgorithmFailed
from voxelhub.algorithms.realtime_bundles import bundle_version, limits_of, run_bundle
from voxelhub.algorithms.warm import WarmBundle, WarmError
from voxelhub.auth.service import Principal
from voxelhub.core.errors import BadRequest, NotFound
from voxelhub.core.objects import ObjectNotFound, ObjectStore


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle version's warm process, as the endpoint's cache holds it."""

    warm: WarmBundle
    package_key: str

    def close(self) -> None:
        self.warm.close_when_idle()


def reference(db: Session, principal: Principal, slug: str) -> bytes:
    """The document that makes the bundle algorithm `slug` a model of an endpoint."""
    algorithm = service.get_algorithm(db, slug)
    service.require_use(db, principal, algorithm)
    version = service.latest_version(db, algorithm)
    if version is None or version.kind != "package":
        raise BadRequest(
            f"algorithm {slug!r} has no package version: an endpoint serves MONAI bundles "
            "uploaded as algorithm packages (POST /api/v1/algorithms/{slug}/versions)"
        )
    return json.dumps({"algorithm": slug}).encode()


def invoke(
    db: Session,
    store: ObjectStore,
    principal: Principal,
    *,
    key: str,
    model: str,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """Run the bundle model under `key` on the call's inputs; its answerable outputs."""
    try:
        document = json.loads(store.get(key))
    except ObjectNotFound as err:
        raise NotFound(f"model {model!r} was removed") from err
    algorithm = service.get_algorithm(db, str(document["algorithm"]))
    service.require_use(db, principal, algorithm)
    version = service.latest_version(db, algorithm)
    if version is None:
        raise BadRequest(f"algorithm {algorithm.slug!r} of model {model!r} has no active version")
    bundle = bundle_version(store, algorithm, version)
    package_key = str(version.package_key)
    cache = endpoints.cache()

    def load() -> tuple[LoadedBundle, float]:
        try:
            warm = WarmBundle(bundle, limits=limits_of(version))
        except WarmError as err:
            raise AlgorithmFailed(f"model {model!r} could not start: {err}") from err
        return LoadedBundle(warm, package_key), warm.memory_mb()

    used: list[WarmBundle] = []

    def warm() -> WarmBundle:
        loaded: LoadedBundle = cache.get(key, load)
        if loaded.package_key != package_key or not loaded.warm.alive:
            cache.forget(key)
            loaded = cache.get(key, load)
        used.append(loaded.warm)
        return loaded.warm

    try:
        return run_bundle(
            db, store, principal, algorithm, version=version, inputs=inputs, warm=warm
        )
    finally:
        for process in used:
            if process.alive:
                cache.resize(key, process.memory_mb())
