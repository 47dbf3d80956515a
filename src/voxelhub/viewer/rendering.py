"""What the viewer routes show: the image of a plane (from the cache or one decoded frame),
label images of SEGs, and the response headers that describe them."""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from voxelhub.core.objects import ObjectStore
from voxelhub.store.access import View
from voxelhub.viewer import service
from voxelhub.viewer.cache import LoadState, LoadStatus, VolumeCache, VolumeNotReady
from voxelhub.viewer.errors import InvalidParameter, NotRenderable
from voxelhub.viewer.params import Display, View2D
from voxelhub.viewer.render.display import OutputGrid, output_grid
from voxelhub.viewer.render.geometry import Plane
from voxelhub.viewer.render.planes import (
    Mode,
    RenderError,
    Volume,
    check_index,
    cut,
    rescale,
    to_voxel,
)
from voxelhub.viewer.seg import seg_labels
from voxelhub.viewer.volumes import (
    SeriesInfo,
    as_volume,
    decode_image,
    first_value,
    series_info,
    volume_source,
)

LOAD_WAIT_S = 120.0
CACHE_SECONDS = 300


@dataclass(frozen=True)
class Shown:
    """An image of a plane in real values (or RGB), its pixel spacing, and the plane's size."""

    values: npt.NDArray[Any]
    spacing: tuple[float, float]
    plane_size: int


@contextlib.contextmanager
def invalid_parameters() -> Iterator[None]:
    """Turn the render core's complaints about parameters into 400 responses."""
    try:
        yield
    except RenderError as err:
        raise InvalidParameter(str(err)) from err


def visible_info(db: Session, view: View, series_uid: str) -> SeriesInfo:
    return series_info(db, service.find_visible_series(db, view, series_uid))


def status_json(status: LoadStatus, *, volume: bool) -> dict[str, Any]:
    return {
        "state": status.state.value,
        "loaded": status.loaded,
        "total": status.total,
        "message": status.message,
        "volume": volume,
    }


def flat_status(info: SeriesInfo) -> dict[str, Any]:
    """Series shown image by image have nothing to load: they are always ready."""
    reason = info.plan.reason if info.kind == "image" else f"a {info.kind} series"
    return {
        "state": "ready",
        "loaded": len(info.images),
        "total": len(info.images),
        "message": f"shown image by image: {reason}",
        "volume": False,
    }


def _volume(store: ObjectStore, info: SeriesInfo, cache: VolumeCache) -> Volume:
    cache.load(info.key, volume_source(store, info))
    try:
        data = cache.wait(info.key, timeout=LOAD_WAIT_S)
    except VolumeNotReady as err:
        raise NotRenderable(
            f"the volume of series {info.series_instance_uid} is not ready: {err}",
            detail={"state": err.status.state.value},
        ) from err
    return as_volume(info, data)


def plane_image(store: ObjectStore, info: SeriesInfo, wanted: View2D, cache: VolumeCache) -> Shown:
    if info.kind != "image":
        kind = "SEG" if info.kind == "seg" else info.kind
        raise NotRenderable(
            f"series {info.series_instance_uid} is a {kind} series without images to "
            "render" + ("; show it with /labels on its source series" if info.kind == "seg" else "")
        )
    geometry = info.plan.geometry
    if geometry is None:
        return _flat_image(store, info, wanted)
    with invalid_parameters():
        check_index(geometry, wanted.plane, wanted.index)
        size = geometry.plane_size(wanted.plane)
        single = wanted.mode is Mode.SLICE or wanted.slab_mm <= 0
        if wanted.plane is Plane.AXIAL and single:
            data = cache.get(info.key)
            if data is None:
                # The first image comes from one decoded frame; the volume loads meanwhile
                # (a load that failed is retried only when asked for, not on every slice).
                if cache.status(info.key).state is LoadState.ABSENT:
                    cache.load(info.key, volume_source(store, info))
                image = info.images[wanted.index]
                values = rescale(decode_image(store, image), image.slope, image.intercept)
                return Shown(values, geometry.image_spacing(Plane.AXIAL), size)
            volume = as_volume(info, data)
        else:
            volume = _volume(store, info, cache)
        image2d = cut(volume, wanted.plane, wanted.index, mode=wanted.mode, slab_mm=wanted.slab_mm)
    return Shown(image2d.values, image2d.spacing, size)


def _flat_image(store: ObjectStore, info: SeriesInfo, wanted: View2D) -> Shown:
    if wanted.plane is not Plane.AXIAL or (wanted.mode is not Mode.SLICE and wanted.slab_mm > 0):
        raise NotRenderable(
            f"series {info.series_instance_uid} does not form a volume ({info.plan.reason}); "
            "only plane=axial&mode=slice can be shown, image by image",
            detail={"state": "ready"},
        )
    count = len(info.images)
    if not 0 <= wanted.index < count:
        raise InvalidParameter(f"index {wanted.index} is outside the series: use 0..{count - 1}")
    image = info.images[wanted.index]
    raw = decode_image(store, image)
    if raw.ndim == 3:
        values: npt.NDArray[Any] = raw
        if raw.dtype != np.uint8:
            peak = float(raw.max()) or 1.0
            values = np.clip(raw.astype(np.float32) * (255.0 / peak), 0, 255).astype(np.uint8)
    else:
        values = rescale(raw, image.slope, image.intercept)
    return Shown(values, image.spacing or (1.0, 1.0), count)


def grey_image(store: ObjectStore, info: SeriesInfo, wanted: View2D, cache: VolumeCache) -> Shown:
    shown = plane_image(store, info, wanted, cache)
    if shown.values.ndim != 2:
        raise NotRenderable(f"series {info.series_instance_uid} holds colour images, not values")
    return shown


def grid_for(shown: Shown, wanted: View2D) -> OutputGrid:
    with invalid_parameters():
        return output_grid(shown.values.shape[:2], shown.spacing, wanted.size)


def window_for(
    store: ObjectStore, info: SeriesInfo, display: Display, values: npt.NDArray[np.float32]
) -> tuple[float, float]:
    center, width = display.center, display.width
    if center is None or width is None:
        default_center, default_width = service.default_window(store, info)
        if default_center is None or default_width is None:
            low, high = float(values.min()), float(values.max())
            default_center, default_width = (low + high) / 2, max(high - low, 1.0)
        center = default_center if center is None else center
        width = default_width if width is None else width
    return center, width


def is_monochrome1(info: SeriesInfo) -> bool:
    return bool(first_value(info.first, "00280004") == "MONOCHROME1")


def image_headers(shown: Shown, grid: OutputGrid, wanted: View2D) -> dict[str, str]:
    return {
        "X-Plane-Size": str(shown.plane_size),
        "X-Pixel-Spacing": f"{grid.pixel_mm:.6g}",
        "X-Index": str(wanted.index),
        "Cache-Control": f"private, max-age={CACHE_SECONDS}",
        "Access-Control-Expose-Headers": "X-Plane-Size, X-Pixel-Spacing, X-Index",
    }


def position_of(info: SeriesInfo, wanted: View2D, row: int, column: int) -> list[float] | None:
    geometry = info.plan.geometry
    if geometry is None:
        return None
    voxel = to_voxel(geometry, wanted.plane, wanted.index, row, column)
    return list(geometry.position_mm(voxel))


def label_image(
    db: Session,
    store: ObjectStore,
    *,
    view: View,
    cache: VolumeCache,
    seg_uid: str,
    source_uid: str,
    wanted: View2D,
) -> Shown:
    seg_series = service.find_visible_series(db, view, seg_uid)
    seg = series_info(db, seg_series)
    if seg.kind != "seg":
        raise NotRenderable(f"series {seg_uid} is not a SEG; /labels shows SEG series only")
    source_uid = source_uid or seg.referenced_series_uid or ""
    if not source_uid:
        raise InvalidParameter(
            "this SEG names no series it labels: add ?source=<the image series it labels>"
        )
    if seg.referenced_series_uid and source_uid != seg.referenced_series_uid:
        raise InvalidParameter(
            f"this SEG labels series {seg.referenced_series_uid}, not {source_uid}; "
            f"use source={seg.referenced_series_uid}"
        )
    source = visible_info(db, view, source_uid)
    geometry = source.plan.geometry
    if geometry is None:
        raise NotRenderable(
            f"the source series does not form a volume ({source.plan.reason}); "
            "labels are shown on volumes only"
        )
    key: Hashable = ("labels", seg.key, source.key)
    data = cache.get(key)
    with invalid_parameters():
        check_index(geometry, wanted.plane, wanted.index)
        if data is None:
            try:
                data = seg_labels(db, store, seg_series, source, geometry)
            except RenderError as err:
                raise NotRenderable(f"SEG {seg_uid} cannot be shown on its source: {err}") from err
            cache.put(key, data)
        mode = Mode.MIP if wanted.mode is not Mode.SLICE else Mode.SLICE
        labels = Volume(data, geometry, labels=True)
        image2d = cut(labels, wanted.plane, wanted.index, mode=mode, slab_mm=wanted.slab_mm)
    return Shown(image2d.values, image2d.spacing, geometry.plane_size(wanted.plane))
