"""WADO-URI (PS3.18 §9): one object named by its UIDs in the query string, as a Part-10 file
or a rendered JPEG or PNG image.

Viewers and reporting systems older than DICOMweb still use it (OHIF's and Cornerstone's
`wadouri:` image loader, image links embedded in reports). Mounted at `/wado` (every archive
the caller may read) and `/wado/archives/{id}` (one), with DICOMweb's authentication:

    GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…
        [&contentType=application/dicom[&transferSyntax=UID|*][&anonymize=yes]]
        [&contentType=image/jpeg|image/png][&frameNumber=N][&rows=R][&columns=C]
        [&region=x1,y1,x2,y2][&windowCenter=C&windowWidth=W][&imageQuality=Q]

Without a contentType an image is sent as JPEG and any other object as its Part-10 file.
`anonymize=yes` applies the PS3.15 basic profile to the file sent, with the UIDs remapped
as the archive's de-identification remaps them (the same original, the same new UID).
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import QueryParams

from voxelhub.auth import audit
from voxelhub.auth.deps import PrincipalDep
from voxelhub.core.deps import DbDep, SettingsDep, StoreDep
from voxelhub.core.errors import BadRequest
from voxelhub.dicom.deidentify import DeidPolicy, deidentify_bytes
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.store import render
from voxelhub.store.access import View, find_instance
from voxelhub.store.deid import deid_key
from voxelhub.store.dicomweb import negotiate, wado
from voxelhub.store.dicomweb.router import Rendering, get_view
from voxelhub.store.errors import InvalidQuery, NotAcceptable
from voxelhub.store.models import Instance

router = APIRouter(tags=["wado-uri"])

DICOM = "application/dicom"
_IMAGES = ("image/jpeg", "image/png")
_UIDS = ("studyUID", "seriesUID", "objectUID")
# Parameters of the standard this server does not act on (a presentation state to apply).
_NOT_TAKEN = ("presentationUID", "presentationSeriesUID")


@router.get("")
def wado_uri(
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    view: Annotated[View, Depends(get_view)],
) -> Response:
    query = request.query_params
    if query.get("requestType") != "WADO":
        raise InvalidQuery(
            "a WADO-URI request needs requestType=WADO, with studyUID, seriesUID and objectUID"
        )
    missing = [name for name in _UIDS if not query.get(name)]
    if missing:
        raise InvalidQuery(f"a WADO-URI request needs {', '.join(missing)}: the object's UIDs")
    taken = [name for name in _NOT_TAKEN if query.get(name)]
    if taken:
        raise InvalidQuery(f"{', '.join(taken)} (a presentation state to apply) is not offered")
    anonymize = _yes(query, "anonymize")  # a rendered image holds no attributes to remove
    study, series, sop = (str(query[name]) for name in _UIDS)
    instance = find_instance(db, view, study, series, sop)
    media = _content_type(query, has_pixels=instance.pixel is not None)
    if media == DICOM:
        return _part10(query, instance, store, settings, db, principal, anonymize=anonymize)
    return _rendered(query, instance, store, media, db, principal)


def _content_type(query: QueryParams, *, has_pixels: bool) -> str:
    """The first of the listed contentTypes that can be sent; without one, JPEG for an image
    and the Part-10 file for any other object."""
    asked = query.get("contentType")
    if not asked:
        return _IMAGES[0] if has_pixels else DICOM
    for item in asked.split(","):
        media = item.split(";")[0].strip().lower()
        if media in (DICOM, *_IMAGES):
            return media
        if media in ("*/*", "image/*"):
            return _IMAGES[0] if has_pixels or media == "image/*" else DICOM
    raise NotAcceptable(
        f"cannot send contentType {asked!r}; WADO-URI objects come as application/dicom, "
        "image/jpeg or image/png"
    )


def _part10(
    query: QueryParams,
    instance: Instance,
    store: StoreDep,
    settings: SettingsDep,
    db: DbDep,
    principal: PrincipalDep,
    *,
    anonymize: bool,
) -> Response:
    syntax = query.get("transferSyntax") or EXPLICIT_VR_LITTLE_ENDIAN
    stored = instance.frames_transfer_syntax_uid if instance.pixel else None
    syntax = negotiate.choose_instance_syntax([syntax], [stored])
    ((media, body),) = wado.instance_parts(store, [instance], syntax)
    if anonymize:
        body, _ = deidentify_bytes(body, DeidPolicy(), key=deid_key(settings, instance.archive_id))
    audit.record(
        db,
        principal,
        "dicom.retrieve",
        object_type="dicomweb",
        object_id=instance.sop_instance_uid,
        detail={"via": "wado-uri", "transfer_syntax": syntax, "anonymized": anonymize},
    )
    return Response(body, media_type=media)


def _yes(query: QueryParams, name: str) -> bool:
    value = (query.get(name) or "no").lower()
    if value not in ("yes", "no"):
        raise InvalidQuery(f"{name} takes yes or no, not {query.get(name)!r}")
    return value == "yes"


def _rendered(
    query: QueryParams,
    instance: Instance,
    store: StoreDep,
    media: str,
    db: DbDep,
    principal: PrincipalDep,
) -> Response:
    if instance.pixel is None:
        raise BadRequest(
            f"instance {instance.sop_instance_uid} has no image to render; ask for "
            "contentType=application/dicom"
        )
    frames = max(instance.number_of_frames, 1)
    frame = _whole(query, "frameNumber", 1, frames) or 1
    rows = _whole(query, "rows", 1, render.MAX_VIEWPORT)
    columns = _whole(query, "columns", 1, render.MAX_VIEWPORT)
    viewport = None
    if rows or columns:
        viewport = (columns or render.MAX_VIEWPORT, rows or render.MAX_VIEWPORT)
    rendering = Rendering(
        window=_window(query),
        viewport=viewport,
        quality=render.parse_quality(query.get("imageQuality")),
        size=None,
        region=render.parse_region(query.get("region")),
    )
    image = rendering.image(store, instance, frame, media)
    audit.record(
        db,
        principal,
        "dicom.rendered",
        object_type="dicomweb",
        object_id=instance.sop_instance_uid,
        detail={"via": "wado-uri", "frame": frame},
    )
    return Response(image, media_type=media, headers={"Cache-Control": "private, max-age=3600"})


def _whole(query: QueryParams, name: str, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidQuery(f"{name} must be a whole number from {low} to {high}, not {raw!r}")
    return int(raw)


def _window(query: QueryParams) -> render.Window | None:
    center, width = query.get("windowCenter"), query.get("windowWidth")
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise InvalidQuery("windowCenter and windowWidth go together: give both or neither")
    try:
        window = render.Window(float(center), float(width))
    except ValueError:
        raise InvalidQuery(
            f"windowCenter and windowWidth must be numbers, not {center!r} and {width!r}"
        ) from None
    if not (math.isfinite(window.center) and math.isfinite(window.width)) or window.width <= 0:
        raise InvalidQuery("windowWidth must be a number > 0, and windowCenter a finite number")
    return window
