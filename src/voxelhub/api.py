"""Assembles the HTTP application: routers, error handlers, health and signed objects."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from voxelhub import __version__, health
from voxelhub.algorithms.endpoints_router import router as endpoints_router
from voxelhub.algorithms.router import router as algorithms_router
from voxelhub.api_methods import HeadAsGet, allowed_methods
from voxelhub.archives.router import router as archives_router
from voxelhub.auth.router import router as auth_router
from voxelhub.core.deps import RuntimeDep
from voxelhub.core.errors import Forbidden, NotFound, VoxelhubError
from voxelhub.core.objects.local import LocalObjectStore
from voxelhub.core.objects.tiered import TieredObjectStore
from voxelhub.core.runtime import Runtime
from voxelhub.ingest.router import router as uploads_router
from voxelhub.jobs.metrics import router as metrics_router
from voxelhub.store.dicomweb.router import router as dicomweb_router
from voxelhub.store.dicomweb.wado_uri_router import router as wado_uri_router
from voxelhub.viewer import page as viewer_page
from voxelhub.viewer.router import router as viewer_api_router
from voxelhub.web import deps as web_deps
from voxelhub.web.compute import router as compute_pages_router
from voxelhub.web.router import router as web_router

logger = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent / "web" / "static"


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            where = err.get("ctx", {}).get("error", "")
            return 400, f"the request body is not valid JSON ({where}); send a JSON document"
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return 422, "; ".join(parts)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoxelhubError)
    async def platform_error(request: Request, exc: VoxelhubError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        if exc.status_code >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return JSONResponse(exc.to_json(), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return JSONResponse(
            {"error": "invalid_request", "message": message, "detail": {"errors": exc.errors()}},
            status_code=status,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}; see /docs"
        headers = exc.headers
        if exc.status_code == 405:
            # The route that answered names its own methods only: others share the path.
            allowed = allowed_methods(request)
            headers = {**(exc.headers or {}), "Allow": allowed}
            message = f"{request.method} is not allowed on {request.url.path}; use {allowed}"
        return JSONResponse({"error": "http_error", "message": message},
                            status_code=exc.status_code, headers=headers)  # fmt: skip

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": "internal_error", "message": "an unexpected error; it has been logged"},
            status_code=500,
        )


def _install_core_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    def healthz(runtime: RuntimeDep) -> JSONResponse:
        """The state of each part: database, object store, workers."""
        body: dict[str, Any] = health.report(runtime)
        body["version"] = __version__
        return JSONResponse(body, status_code=503 if body["status"] == "down" else 200)

    @app.get("/objects/{key:path}", include_in_schema=False)
    def signed_object(
        key: str, expires: int, sig: str, runtime: RuntimeDep, filename: str | None = None
    ) -> FileResponse:
        """Serve a local-store object for a signed, unexpired URL (S3 serves its own)."""
        store = runtime.store
        if isinstance(store, TieredObjectStore):
            store = store.holder(key)
        if not isinstance(store, LocalObjectStore):
            raise NotFound("objects are served by the S3 store; ask for a new download link")
        if not store.verify_signed(key, expires, sig):
            raise Forbidden("this download link is invalid or has expired; ask for a new one")
        return FileResponse(store.path_of(key), filename=filename)


def build_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(
        title="voxelhub",
        version=__version__,
        description="An open platform for medical imaging AI.",
    )
    app.state.runtime = runtime
    app.add_middleware(HeadAsGet)
    # Browser viewers (OHIF) on other origins call the APIs with bearer tokens, not cookies.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=runtime.settings.cors_origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Accept", "X-CSRF-Token"],
        expose_headers=["Content-Disposition", "Warning"],
        allow_credentials=False,
        max_age=3600,
    )
    _install_error_handlers(app)
    _install_core_routes(app)
    # First: routes are matched in order, and a viewer sends a DICOMweb request per image.
    app.include_router(dicomweb_router, prefix="/dicom-web")
    app.include_router(dicomweb_router, prefix="/dicom-web/archives/{archive_id}")
    app.include_router(wado_uri_router, prefix="/wado")
    app.include_router(wado_uri_router, prefix="/wado/archives/{archive_id}")
    app.include_router(auth_router)
    app.include_router(archives_router)
    app.include_router(uploads_router)
    app.include_router(algorithms_router)
    app.include_router(endpoints_router)
    app.include_router(metrics_router)
    app.include_router(viewer_api_router)
    app.include_router(compute_pages_router)
    app.include_router(web_router)
    app.include_router(
        viewer_page.build_page_router(
            environment=web_deps.environment, route_class=web_deps.PageRoute,
            signed_in=web_deps.signed_in, headers=web_deps.PAGE_HEADERS,
        )
    )  # fmt: skip
    app.mount("/viewer/static", StaticFiles(directory=viewer_page.STATIC_DIR), name="viewer-static")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
