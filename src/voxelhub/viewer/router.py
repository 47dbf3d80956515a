"""The viewer API (`/viewer/api`): studies, series loading, rendering, labels, ROI and values.

Reformatted planes and projections need the series' volume in this process's cache: such
a request starts the load when needed and waits for it (up to `LOAD_WAIT_S`), so it is
never refused while loading. Axial single slices of a series not yet loaded are decoded
directly, which makes the first image fast. Each web process has its own cache.

Reads are audited per study opened, series loaded and region measured; single images
(`/render`, `/labels`, `/value`) are not, as WADO-RS `/rendered` frames are not.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from voxelhub.auth import audit
from voxelhub.auth.deps import PrincipalDep
from voxelhub.core.deps import DbDep, SettingsDep, StoreDep
from voxelhub.store.access import View, view_for
from voxelhub.viewer import rendering, service
from voxelhub.viewer.cache import MB, VolumeCache
from voxelhub.viewer.params import Display, Region, View2D, integer
from voxelhub.viewer.render.display import ImageFormat, encode, window
from voxelhub.viewer.render.stats import roi_stats
from voxelhub.viewer.volumes import volume_source

router = APIRouter(prefix="/viewer/api", tags=["viewer"])
_cache_lock = threading.Lock()


def get_view(principal: PrincipalDep) -> View:
    return view_for(principal, None)


def get_cache(request: Request, settings: SettingsDep) -> VolumeCache:
    state = request.app.state
    with _cache_lock:
        cache: VolumeCache | None = getattr(state, "viewer_cache", None)
        if cache is None:
            cache = VolumeCache(settings.viewer_cache_mb * MB)
            state.viewer_cache = cache
    return cache


ViewDep = Annotated[View, Depends(get_view)]
CacheDep = Annotated[VolumeCache, Depends(get_cache)]


@router.get("/studies")
def list_studies(
    request: Request, principal: PrincipalDep, db: DbDep, view: ViewDep
) -> JSONResponse:
    """Studies the caller can see, newest first, filtered by patient, date, modality, archive."""
    body = service.search_studies(db, view, request.query_params)
    detail = {"query": str(request.query_params)[:500], "total": body["total"]}
    audit.record(db, principal, "viewer.search", object_type="study", detail=detail)
    return JSONResponse(body)


@router.get("/studies/{study_uid}")
def get_study(
    study_uid: str, principal: PrincipalDep, db: DbDep, store: StoreDep, view: ViewDep
) -> JSONResponse:
    """A study and its series: kind, volume geometry, default window, overlay text."""
    body = service.study_document(db, store, view, study_uid)
    audit.record(db, principal, "viewer.study", object_type="study", object_id=study_uid)
    return JSONResponse(body)


@router.post("/series/{series_uid}/load", status_code=202)
def load_series(
    series_uid: str,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
    cache: CacheDep,
) -> JSONResponse:
    """Start decoding the series into this process's volume cache."""
    info = rendering.visible_info(db, view, series_uid)
    audit.record(db, principal, "viewer.load", object_type="series", object_id=series_uid)
    if info.plan.valid and info.kind == "image":
        status = cache.load(info.key, volume_source(store, info))
        return JSONResponse(rendering.status_json(status, volume=True), status_code=202)
    return JSONResponse(rendering.flat_status(info), status_code=202)


@router.get("/series/{series_uid}/status")
def load_status(series_uid: str, db: DbDep, view: ViewDep, cache: CacheDep) -> JSONResponse:
    """Whether the series' volume is absent, loading, ready or failed, and how far along."""
    info = rendering.visible_info(db, view, series_uid)
    if info.plan.valid and info.kind == "image":
        return JSONResponse(rendering.status_json(cache.status(info.key), volume=True))
    return JSONResponse(rendering.flat_status(info))


@router.get("/series/{series_uid}/render")
def render(
    series_uid: str, request: Request, db: DbDep, store: StoreDep, view: ViewDep, cache: CacheDep
) -> Response:
    """One image of a plane (or a slab projection), windowed, square in mm, encoded."""
    info = rendering.visible_info(db, view, series_uid)
    wanted = View2D.parse(request.query_params)
    display = Display.parse(request.query_params)
    image = rendering.plane_image(store, info, wanted, cache)
    grid = rendering.grid_for(image, wanted)
    if image.values.ndim == 3:
        pixels = grid.apply(image.values.astype("uint8"))
    else:
        center, width = rendering.window_for(store, info, display, image.values)
        invert = display.invert != rendering.is_monochrome1(info)
        with rendering.invalid_parameters():
            shown = window(image.values, center=center, width=width, invert=invert)
        pixels = grid.apply(shown)
    return Response(
        encode(pixels, display.image_format),
        media_type=display.image_format.media_type,
        headers=rendering.image_headers(image, grid, wanted),
    )


@router.get("/series/{seg_uid}/labels")
def labels(
    seg_uid: str, request: Request, db: DbDep, store: StoreDep, view: ViewDep, cache: CacheDep
) -> Response:
    """The SEG's segment numbers on the exact output grid of `/render` of its source series."""
    source_uid = request.query_params.get("source") or ""
    wanted = View2D.parse(request.query_params)
    image = rendering.label_image(
        db, store, view=view, cache=cache, seg_uid=seg_uid, source_uid=source_uid, wanted=wanted
    )
    grid = rendering.grid_for(image, wanted)
    pixels = grid.apply(image.values.astype("uint8"))
    return Response(
        encode(pixels, ImageFormat.PNG),
        media_type="image/png",
        headers=rendering.image_headers(image, grid, wanted),
    )


@router.get("/series/{series_uid}/roi")
def roi(
    series_uid: str,
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
    cache: CacheDep,
) -> JSONResponse:
    """Mean, spread and extremes of the real values in a region of the rendered image."""
    info = rendering.visible_info(db, view, series_uid)
    wanted = View2D.parse(request.query_params)
    region = Region.parse(request.query_params)
    image = rendering.grey_image(store, info, wanted, cache)
    grid = rendering.grid_for(image, wanted)
    with rendering.invalid_parameters():
        shown = grid.apply(image.values)
        stats = roi_stats(shown, region.box, shape=region.shape, pixel_mm=grid.pixel_mm)
    audit.record(db, principal, "viewer.roi", object_type="series", object_id=series_uid)
    body: dict[str, Any] = {
        "mean": stats.mean,
        "std": stats.std,
        "min": stats.min,
        "max": stats.max,
        "n": stats.n,
        "area_mm2": stats.area_mm2,
        "unit": info.unit,
    }
    return JSONResponse(body)


@router.get("/series/{series_uid}/value")
def value(
    series_uid: str, request: Request, db: DbDep, store: StoreDep, view: ViewDep, cache: CacheDep
) -> JSONResponse:
    """The real value under one output pixel, and where that pixel lies in the patient."""
    info = rendering.visible_info(db, view, series_uid)
    wanted = View2D.parse(request.query_params)
    query = request.query_params
    x, y = integer(query, "x", low=0), integer(query, "y", low=0)
    image = rendering.grey_image(store, info, wanted, cache)
    grid = rendering.grid_for(image, wanted)
    with rendering.invalid_parameters():
        row, column = grid.source(y, x)
    return JSONResponse(
        {
            "value": float(image.values[row, column]),
            "unit": info.unit,
            "position_mm": rendering.position_of(info, wanted, row, column),
        }
    )


@router.get("/cache")
def cache_usage(principal: PrincipalDep, cache: CacheDep) -> JSONResponse:
    """Memory held by this web process's volume cache, against its budget."""
    usage = cache.usage()
    return JSONResponse(
        {
            "used_bytes": usage.used_bytes,
            "budget_bytes": usage.budget_bytes,
            "entries": usage.entries,
            "ready": usage.ready,
            "loading": usage.loading,
        }
    )
