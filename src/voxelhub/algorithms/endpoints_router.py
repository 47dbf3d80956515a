"""HTTP API of real-time and multi-model endpoints."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from voxelhub.algorithms import endpoints, realtime, service
from voxelhub.auth import audit
from voxelhub.auth.deps import AdminDep, PrincipalDep, current_principal, optional_principal
from voxelhub.core.db import session_scope
from voxelhub.core.deps import DbDep, StoreDep, get_runtime

router = APIRouter(prefix="/api/v1", tags=["endpoints"])


@router.post("/algorithms/{slug}/invoke")
async def invoke_algorithm(
    slug: str,
    inputs: Annotated[dict[str, Any], Body(embed=True)],
    request: Request,
    response: Response,
) -> dict[str, Any]:
    """Run a built-in algorithm now and answer with its outputs (a real-time endpoint).

    Authentication as on every route (a bearer token or a session with CSRF). The whole
    call runs in one worker thread: FastAPI would run each synchronous dependency in a
    thread of its own, one hand-over each, which is most of the cost of a call this short.
    The audit record commits before the answer is sent: an answered call is never
    missing from the audit log.
    """
    started = time.perf_counter()
    outputs = await run_in_threadpool(_invoke, request, slug, inputs)
    response.headers["Server-Timing"] = f"total;dur={(time.perf_counter() - started) * 1000:.1f}"
    return {"outputs": outputs}


def _invoke(request: Request, slug: str, inputs: dict[str, Any]) -> dict[str, Any]:
    runtime = get_runtime(request)
    with session_scope(runtime.database_url) as db:
        principal = current_principal(optional_principal(request, db, runtime.settings))
        algorithm = service.get_algorithm(db, slug)
        outputs = realtime.invoke(db, runtime.store, principal, algorithm, inputs)
        audit.record(
            db, principal, "algorithm.invoke", object_type="algorithm", object_id=algorithm.id
        )
    return outputs


@router.put("/endpoints/{endpoint}/models/{model}", status_code=status.HTTP_201_CREATED)
def upload_model(
    endpoint: str, model: str, file: UploadFile, admin: AdminDep, db: DbDep, store: StoreDep
) -> dict[str, Any]:
    """Add (or replace) a model of a multi-model endpoint; no restart needed."""
    runtime = endpoints.runtime_of(file.filename or "")
    for other in endpoints.RUNTIMES:
        stale = endpoints.model_key(endpoint, model, other)
        if other != runtime and store.exists(stale):
            store.delete(stale)
    key = endpoints.model_key(endpoint, model, runtime)
    info = store.put(key, file.file)
    endpoints.cache().forget(key)
    audit.record(
        db,
        admin,
        "endpoint.model.upload",
        object_type="endpoint",
        object_id=endpoint,
        detail={"model": model, "size": info.size},
    )
    return {"endpoint": endpoint, "model": model, "runtime": runtime, "size": info.size}


@router.get("/endpoints/{endpoint}/models")
def list_models(endpoint: str, principal: PrincipalDep, store: StoreDep) -> list[dict[str, Any]]:
    prefix = f"endpoints/{endpoints.check_name('endpoint', endpoint)}/"
    warm = set(endpoints.cache().keys())
    return [
        {
            "model": info.key[len(prefix) :].rsplit(".", 1)[0],
            "size": info.size,
            "loaded": info.key in warm,
        }
        for info in store.list(prefix)
    ]


@router.post("/endpoints/{endpoint}/invoke")
def invoke_endpoint(
    endpoint: str,
    model: Annotated[str, Body()],
    inputs: Annotated[dict[str, Any], Body()],
    principal: PrincipalDep,
    store: StoreDep,
) -> dict[str, Any]:
    """Run the named model of a multi-model endpoint on tensors; loads it on first use."""
    outputs = endpoints.invoke(store, endpoint, model, inputs)
    return {"model": model, "outputs": outputs, "loaded": len(endpoints.cache().keys())}
