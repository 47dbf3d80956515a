"""HTTP API of real-time and multi-model endpoints."""

from __future__ import annotations

import io
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Form, Request, Response, UploadFile, status
from starlette.concurrency import run_in_threadpool

from voxelhub.algorithms import endpoint_bundles, endpoints, realtime, service
from voxelhub.auth import audit
from voxelhub.auth.deps import AdminDep, PrincipalDep, current_principal, optional_principal
from voxelhub.core.db import session_scope
from voxelhub.core.deps import DbDep, SettingsDep, StoreDep, get_runtime
from voxelhub.core.errors import BadRequest

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
    endpoint: str,
    model: str,
    admin: AdminDep,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    file: UploadFile | None = None,
    algorithm: Annotated[str | None, Form()] = None,
) -> dict[str, Any]:
    """Add (or replace) a model of a multi-model endpoint; no restart needed.

    Send a model `file` (TorchScript `.pt` or ONNX `.onnx`) or `algorithm`, the slug of a
    MONAI bundle uploaded as an algorithm package.
    """
    body: Any
    if algorithm is not None and file is None:
        runtime = endpoints.REFERENCE
        body = io.BytesIO(endpoint_bundles.reference(db, admin, algorithm))
    elif file is not None and algorithm is None:
        runtime = endpoints.runtime_of(file.filename or "")
        body = file.file
    else:
        raise BadRequest(
            "send either a model file (file=, TorchScript .pt or ONNX .onnx) or "
            "algorithm=<slug> (a MONAI bundle uploaded as an algorithm package), not both"
        )
    cache = endpoints.cache(settings.endpoint_memory_mb)
    for other in endpoints.SUFFIXES:
        stale = endpoints.model_key(endpoint, model, other)
        if other != runtime and store.exists(stale):
            store.delete(stale)
            cache.forget(stale)
    key = endpoints.model_key(endpoint, model, runtime)
    info = store.put(key, body)
    cache.forget(key)
    audit.record(
        db,
        admin,
        "endpoint.model.upload",
        object_type="endpoint",
        object_id=endpoint,
        detail={"model": model, "size": info.size, "algorithm": algorithm},
    )
    return {"endpoint": endpoint, "model": model, "runtime": runtime, "size": info.size}


@router.get("/endpoints/{endpoint}/models")
def list_models(
    endpoint: str, principal: PrincipalDep, store: StoreDep, settings: SettingsDep
) -> list[dict[str, Any]]:
    """The endpoint's models; `loaded` ones are warm, taking `memory_mb` of the budget."""
    prefix = f"endpoints/{endpoints.check_name('endpoint', endpoint)}/"
    warm = endpoints.cache(settings.endpoint_memory_mb).sizes()
    return [
        {
            "model": info.key[len(prefix) :].rsplit(".", 1)[0],
            "runtime": info.key.rsplit(".", 1)[-1],
            "size": info.size,
            "loaded": info.key in warm,
            "memory_mb": round(warm.get(info.key, 0.0), 1),
        }
        for info in store.list(prefix)
    ]


@router.post("/endpoints/{endpoint}/invoke")
def invoke_endpoint(
    endpoint: str,
    model: Annotated[str, Body()],
    inputs: Annotated[dict[str, Any], Body()],
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    response: Response,
) -> dict[str, Any]:
    """Run the named model of a multi-model endpoint; loads it on first use.

    A model file takes tensors (`{"shape", "dtype", "data"}` or `{"values"}`) and answers
    tensors; a bundle algorithm takes its interfaces' inputs (an image as
    `{filename, data}`, a series as `{archive_id, series_instance_uid}`) and answers the
    outputs a call can carry (`volumes`, `mask`).
    """
    started = time.perf_counter()
    cache = endpoints.cache(settings.endpoint_memory_mb)
    loads = cache.loads
    key = endpoints.find_model(store, endpoint, model)
    if key.endswith(f".{endpoints.REFERENCE}"):
        outputs = endpoint_bundles.invoke(db, store, principal, key=key, model=model, inputs=inputs)
    else:
        outputs = endpoints.invoke(store, endpoint, model, inputs)
    response.headers["Server-Timing"] = f"total;dur={(time.perf_counter() - started) * 1000:.1f}"
    return {
        "model": model,
        "outputs": outputs,
        "loaded": len(cache.keys()),
        "cold": cache.loads > loads,
    }
