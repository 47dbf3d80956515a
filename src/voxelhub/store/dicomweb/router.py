"""DICOMweb (PS3.18): STOW-RS, QIDO-RS and WADO-RS over the image store.

The same routes serve every archive the caller can read (`/dicom-web`) and one archive
(`/dicom-web/archives/{archive_id}`).
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from voxelhub.archives import service as archives
from voxelhub.archives.errors import ArchiveNotFound
from voxelhub.archives.models import Archive
from voxelhub.auth import audit
from voxelhub.auth.deps import PrincipalDep, current_principal, optional_principal
from voxelhub.auth.roles import ArchiveRole
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.core.deps import DbDep, SettingsDep, StoreDep
from voxelhub.core.errors import BadRequest
from voxelhub.core.objects import ObjectStore
from voxelhub.core.runtime import Runtime
from voxelhub.dicom import dicomxml
from voxelhub.dicom.codecs import decoded_description
from voxelhub.dicom.join import frame_for_transfer_syntax
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.dicom.validate import is_uid
from voxelhub.store import delete as deletion
from voxelhub.store import ingest_guard, qido, render
from voxelhub.store.access import (
    View,
    find_instance,
    find_instance_copies,
    find_series,
    find_series_copies,
    find_studies,
    first_copies,
    first_documents,
    series_of_studies,
    view_for,
)
from voxelhub.store.deid import preparer_for
from voxelhub.store.dicomweb import negotiate, stow, stow_json, wado
from voxelhub.store.dicomweb.frames import autocommit, frames_body
from voxelhub.store.dicomweb.multipart import (
    decoded_body,
    new_boundary,
    parse_media_type,
    read_parts,
    write_parts,
)
from voxelhub.store.errors import InvalidQuery, UnsupportedMediaType
from voxelhub.store.imagesets import (
    instances_of,
    pixel_of,
    read_frames,
    series_metadata,
    series_metadata_gz,
)
from voxelhub.store.models import Instance

router = APIRouter(tags=["dicomweb"])
DICOM_JSON = "application/dicom+json"


def _scope(request: Request) -> uuid.UUID | None:
    raw = request.path_params.get("archive_id")
    if raw is None:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise BadRequest(f"{raw!r} is not an archive id") from None


def get_view(request: Request, principal: PrincipalDep, db: DbDep) -> View:
    scope = _scope(request)
    if scope is not None:
        archives.get_archive(db, principal, scope, ArchiveRole.viewer)
    return view_for(principal, scope)


ViewDep = Annotated[View, Depends(get_view)]


def _base(request: Request) -> str:
    path = request.url.path
    root = path[: path.index("/dicom-web") + len("/dicom-web")]
    scope = request.path_params.get("archive_id")
    if scope is not None:
        root += f"/archives/{scope}"
    return str(request.base_url).rstrip("/") + root


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type=DICOM_JSON,
        headers=headers,
    )


def _xml_parts(datasets: Iterable[Any]) -> Response:
    """DICOM JSON objects as the Native DICOM Model: one XML document per part."""
    boundary = new_boundary()
    parts = ((dicomxml.MEDIA_TYPE, dicomxml.to_xml(dataset)) for dataset in datasets)
    return Response(
        b"".join(write_parts(parts, boundary)),
        media_type=f'multipart/related; type="{dicomxml.MEDIA_TYPE}"; boundary={boundary}',
    )


# How the stored documents name bulk data (`splitting.bulkdata_uri`): at /dicom-web. As
# PostgreSQL writes JSON (search bodies) there is a space after the colon.
_BULK_AT_ROOT = re.compile(rb'"BulkDataURI": ?"/dicom-web/studies/')


def _scoped_json(request: Request, body: bytes) -> bytes:
    """DICOM JSON `body` with its BulkDataURIs in the archive the request is scoped to.

    The stored documents name bulk data at /dicom-web, where a UID that several archives
    hold reads its oldest copy: metadata read at /dicom-web/archives/{id} must lead to the
    bulk data of that archive's own copy, which may differ.
    """
    scope = _scope(request)
    if scope is None:
        return body
    scoped = f'"BulkDataURI":"/dicom-web/archives/{scope}/studies/'.encode()
    return _BULK_AT_ROOT.sub(scoped, body)


def _metadata(request: Request, datasets: list[Any], form: str) -> Response:
    """Stored metadata documents in the form the client asked for (see `_scoped_json`)."""
    body = _scoped_json(request, json.dumps(datasets, separators=(",", ":")).encode())
    if form == negotiate.XML:
        return _xml_parts(json.loads(body))
    return Response(body, media_type=DICOM_JSON)


def _multipart(parts: Iterable[tuple[str, bytes]], part_type: str) -> StreamingResponse:
    boundary = new_boundary()
    media = f'multipart/related; type="{part_type}"; boundary={boundary}'
    return StreamingResponse(write_parts(parts, boundary), media_type=media)


# --- WADO-RS: frames ----------------------------------------------------------------------


def _frames_in_thread(request: Request, uids: tuple[str, str, str], frames: str) -> Response:
    runtime: Runtime = request.app.state.runtime
    with session_scope(runtime.database_url) as db:
        autocommit(db)
        principal = current_principal(optional_principal(request, db, runtime.settings))
        found = frames_body(
            db,
            runtime.store,
            principal,
            _scope(request),
            uids=uids,
            frames=frames,
            accept=request.headers.get("accept"),
        )
    return Response(found.body, media_type=found.media_type)


# A viewer sends one of these per image: the whole request (credentials, lookup, read,
# audit) runs in one worker thread, as a search does, and the body (a frame or a few) goes
# out in one piece instead of streaming through another thread. Declared first: routes are
# matched in order, and a viewer sends far more of these than of any other request.
@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}")
async def retrieve_frames(
    study: str, series: str, instance: str, frames: str, request: Request
) -> Response:
    return await run_in_threadpool(_frames_in_thread, request, (study, series, instance), frames)


# --- STOW-RS ------------------------------------------------------------------------------


def _target_archive(
    request: Request, principal: PrincipalDep, db: DbDep, settings: SettingsDep
) -> uuid.UUID:
    scope = _scope(request)
    named = request.query_params.get("archive") or (None if scope else settings.default_archive)
    if scope is None and named is None:
        raise BadRequest(
            "say which archive to store into: POST to /dicom-web/archives/{archive_id}/studies, "
            "add ?archive=NAME, or set VOXELHUB_DEFAULT_ARCHIVE"
        )
    if scope is None:
        found = db.scalar(select(Archive.id).where(Archive.name == named))
        if found is None:
            try:
                found = uuid.UUID(str(named))
            except ValueError:
                raise BadRequest(f"no archive named {named!r}") from None
        scope = found
    archives.get_archive(db, principal, scope, ArchiveRole.uploader)
    return scope


@router.post("/studies", response_model=None)
@router.post("/studies/{study}", response_model=None)
async def stow_rs(
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    archive_id: Annotated[uuid.UUID, Depends(_target_archive)],
    study: str | None = None,
) -> Response:
    """Store instances sent as multipart/related; type="application/dicom"."""
    form = negotiate.metadata_form(request.headers.get("accept"), "STOW-RS responses")
    if study is not None and not is_uid(study):
        # Bad syntax of the request itself (PS3.18 §10.5.3: 400), not a failure of each
        # instance; and no Retrieve URL can be made of it.
        raise BadRequest(
            f"{study[:80]!r} in the URL is not a Study Instance UID (digits separated by single "
            "dots, at most 64 characters); POST to /studies, or to /studies/{StudyInstanceUID}"
        )
    media = parse_media_type(request.headers.get("content-type", ""))
    if media.type != "multipart/related":
        raise UnsupportedMediaType(
            'STOW-RS takes Content-Type: multipart/related; type="application/dicom"; '
            f"boundary=…, not {media.type or 'nothing'}"
        )
    kind = media.params.get("type", "application/dicom").strip('"').lower()
    if kind not in ("application/dicom", stow_json.JSON_TYPE, stow_json.XML_TYPE):
        raise UnsupportedMediaType(
            f"STOW-RS of type={media.params['type']!r} is not offered; send each instance as "
            'a Part-10 file, type="application/dicom", or its metadata with its bulk data, '
            'type="application/dicom+json" or type="application/dicom+xml"'
        )
    limit = settings.max_upload_part_mb * 1024 * 1024
    parts = read_parts(
        decoded_body(request.stream(), request.headers.get("content-encoding")),
        media.params.get("boundary", ""),
        max_part_bytes=limit,
    )
    await asyncio.to_thread(ingest_guard.hold_during_transaction, db, archive_id)
    prepare = await asyncio.to_thread(preparer_for, db, settings, archive_id)
    result = await stow.store_parts(
        parts, db=db, store=store, archive_id=archive_id, study_uid=study, prepare=prepare,
        metadata_and_bulk=kind != "application/dicom", max_bytes=limit,
    )  # fmt: skip
    if not result.stored and not result.failed:
        raise InvalidQuery(
            "the multipart body holds no parts; send each instance as a part of type "
            "application/dicom"
        )
    detail: dict[str, Any] = {"stored": len(result.stored), "failed": len(result.failed)}
    if prepare is not None:
        detail["deidentified"] = result.deid.to_json()
    audit.record(
        db, principal, "dicom.store", object_type="archive", object_id=archive_id, detail=detail
    )
    response = result.response(_base(request), study)
    if form == negotiate.XML:
        return Response(
            dicomxml.to_xml(response), result.status_code, media_type=dicomxml.MEDIA_TYPE
        )
    return _json(response, result.status_code)


# --- QIDO-RS ------------------------------------------------------------------------------

# A search runs its whole request (credentials, query, audit, commit) in one worker thread:
# as sync dependencies each of those steps would take a thread hop of its own, and on a busy
# host the hops cost more than the search itself (bench/store.py, QIDO-RS study search).
Search = Callable[[Session, Principal, View, Request], tuple[bytes, int, list[str]] | None]


def _search_event(request: Request, principal: Principal) -> dict[str, Any]:
    return audit.event_values(
        principal,
        "dicom.search",
        object_type="dicomweb",
        object_id=request.url.path[-100:],
        detail={"query": str(request.query_params)[:500]},
    )


# Query parameters that are taken but not acted on: the results come in their usual order
# whatever `orderby` says, and the client is told so, as of attributes not matched on.
_NOT_APPLIED = frozenset({"orderby"})


def _search_in_thread(request: Request, search: Search) -> Response:
    form = negotiate.metadata_form(request.headers.get("accept"), "search results")
    runtime: Runtime = request.app.state.runtime
    with session_scope(runtime.database_url) as db:
        principal = current_principal(optional_principal(request, db, runtime.settings))
        view = view_for(principal, _scope(request))
        found = search(db, principal, view, request)
        if found is None and view.scope is not None:
            # A scoped search of an archive the caller may not read: say which error it is.
            archives.get_archive(db, principal, view.scope, ArchiveRole.viewer)
            found = search(db, principal, view, request)  # the role came in the meantime
        if found is None:
            raise ArchiveNotFound(
                f"no archive {view.scope} that you can see; list yours with GET /api/v1/archives"
            )
    body, count, unsupported = found
    warnings = []
    ignored = sorted({name for name, _ in request.query_params.multi_items()} & _NOT_APPLIED)
    if ignored:
        warnings.append(f'299 voxelhub "not applied: {", ".join(ignored)}"')
    if unsupported:
        names = ", ".join(sorted(set(unsupported)))
        warnings.append(f'299 voxelhub "not matched on: {names}"')
    items = request.query_params.multi_items()
    limit = qido.server_limit(items)
    if limit is not None and count >= limit:
        offset = qido.parse_query(i for i in items if i[0] == "offset").offset
        warnings.append(
            f'299 voxelhub "the server returns at most {limit} results: there may be more, '
            f'ask for them with offset={offset + count}"'
        )
    headers = {"Warning": ", ".join(warnings)} if warnings else {}
    body = _scoped_json(request, body)  # attributes asked for may be bulk data
    if form == negotiate.XML:
        response = _xml_parts(json.loads(body))
        response.headers.update(headers)
        return response
    return Response(body, media_type=DICOM_JSON, headers=headers)


def _studies(
    db: Session, principal: Principal, view: View, request: Request
) -> tuple[bytes, int, list[str]] | None:
    # PostgreSQL writes the body and the audit record, in one statement and one commit
    # (store/qido_studies.py).
    body, unsupported = qido.audited_study_search(
        db,
        qido.parse_query(request.query_params.multi_items()),
        archives=view.archives,
        scope=view.scope,
        base_url=_base(request),
        event=_search_event(request, principal),
    )
    return None if body is None else (body.json, body.count, unsupported)


def _in_python(search: Callable[..., qido.Results], **where: str) -> Search:
    def run(
        db: Session, principal: Principal, view: View, request: Request
    ) -> tuple[bytes, int, list[str]] | None:
        query = qido.parse_query(request.query_params.multi_items())
        if view.scope is not None:
            archives.get_archive(db, principal, view.scope, ArchiveRole.viewer)
        results = search(
            db, query, archives=view.archives, scope=view.scope, base_url=_base(request), **where
        )
        audit.record(
            db,
            principal,
            "dicom.search",
            object_type="dicomweb",
            object_id=request.url.path[-100:],
            detail={"query": str(request.query_params)[:500], "returned": len(results.items)},
        )
        body = json.dumps(results.items, separators=(",", ":")).encode()
        return body, len(results.items), results.unsupported

    return run


@router.get("/studies")
async def search_studies(request: Request) -> Response:
    return await run_in_threadpool(_search_in_thread, request, _studies)


@router.get("/series")
async def search_all_series(request: Request) -> Response:
    return await run_in_threadpool(_search_in_thread, request, _in_python(qido.search_series))


@router.get("/studies/{study}/series")
async def search_series(study: str, request: Request) -> Response:
    search = _in_python(qido.search_series, study_uid=study)
    return await run_in_threadpool(_search_in_thread, request, search)


@router.get("/instances")
async def search_all_instances(request: Request) -> Response:
    search = _in_python(qido.search_instances)
    return await run_in_threadpool(_search_in_thread, request, search)


@router.get("/studies/{study}/instances")
async def search_study_instances(study: str, request: Request) -> Response:
    search = _in_python(qido.search_instances, study_uid=study)
    return await run_in_threadpool(_search_in_thread, request, search)


@router.get("/studies/{study}/series/{series}/instances")
async def search_series_instances(study: str, series: str, request: Request) -> Response:
    search = _in_python(qido.search_instances, study_uid=study, series_uid=series)
    return await run_in_threadpool(_search_in_thread, request, search)


# --- WADO-RS: instances -------------------------------------------------------------------


def _retrieve(
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    instances: list[Instance],
    what: str,
    *,
    single_part: bool = False,
) -> Response:
    # Chosen before the first byte: a syntax some instance cannot be sent in is refused
    # (406), not found out while the body streams.
    syntax = negotiate.choose_instance_syntax(
        negotiate.instance_choices(request.headers.get("accept")),
        (i.frames_transfer_syntax_uid if i.pixel else None for i in instances),
    )
    audit.record(
        db,
        principal,
        "dicom.retrieve",
        object_type="dicomweb",
        object_id=what,
        detail={"instances": len(instances), "transfer_syntax": syntax},
    )
    parts = wado.instance_parts(store, instances, syntax)
    if single_part:
        ((media, body),) = parts
        return Response(body, media_type=media)
    # The first part is made before the response starts, so that an instance that cannot be
    # sent as asked is refused with its status (all of a one-instance retrieval).
    first = next(parts, None)
    return _multipart(itertools.chain([first] if first else [], parts), "application/dicom")


@router.get("/studies/{study}")
def retrieve_study(
    study: str, request: Request, principal: PrincipalDep, db: DbDep, store: StoreDep, view: ViewDep
) -> Response:
    # At /dicom-web every visible copy contributes, each instance once (its oldest copy).
    all_series = series_of_studies(db, find_studies(db, view, study))
    instances = first_copies(i for s in all_series for i in instances_of(db, s.id))
    return _retrieve(request, principal, db, store, instances, study)


@router.get("/studies/{study}/series/{series}")
def retrieve_series(
    study: str,
    series: str,
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
) -> Response:
    copies = find_series_copies(db, view, study, series)
    instances = first_copies(i for copy in copies for i in instances_of(db, copy.id))
    return _retrieve(request, principal, db, store, instances, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}")
def retrieve_instance(
    study: str,
    series: str,
    instance: str,
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
) -> Response:
    found = find_instance(db, view, study, series, instance)
    single = negotiate.wants_single_part(request.headers.get("accept"))
    return _retrieve(request, principal, db, store, [found], instance, single_part=single)


# --- WADO-RS: metadata --------------------------------------------------------------------


def _metadata_form(request: Request) -> str:
    """DICOM JSON or XML; an Accept header that takes neither is refused first."""
    return negotiate.metadata_form(request.headers.get("accept"), "metadata")


MetadataForm = Annotated[str, Depends(_metadata_form)]


@router.get("/studies/{study}/metadata")
def study_metadata(
    study: str,
    form: MetadataForm,
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
) -> Response:
    documents: list[Any] = []
    for series in series_of_studies(db, find_studies(db, view, study)):
        documents.extend(series_metadata(db, store, series))
    audit.record(db, principal, "dicom.metadata", object_type="dicomweb", object_id=study)
    return _metadata(request, first_documents(documents), form)


def _instance_order(document: dict[str, Any]) -> tuple[bool, int, str]:
    """Instances by InstanceNumber (those without last), then SOP Instance UID: the order of
    a series' stored metadata document."""
    number = (document.get("00200013", {}).get("Value") or [None])[0]
    uid = (document.get("00080018", {}).get("Value") or [""])[0]
    return number is None, int(number or 0), str(uid)


@router.get("/studies/{study}/series/{series}/metadata")
def series_metadata_route(
    study: str,
    series: str,
    form: MetadataForm,
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
) -> Response:
    copies = find_series_copies(db, view, study, series)
    if len(copies) > 1:  # at /dicom-web, a series several archives hold: each instance once
        merged = first_documents(d for copy in copies for d in series_metadata(db, store, copy))
        merged.sort(key=_instance_order)
        audit.record(db, principal, "dicom.metadata", object_type="dicomweb", object_id=series)
        return _metadata(request, merged, form)
    body = series_metadata_gz(db, store, copies[0])
    audit.record(db, principal, "dicom.metadata", object_type="dicomweb", object_id=series)
    if form == negotiate.XML:
        return _metadata(request, json.loads(gzip.decompress(body)), form)
    if _scope(request) is not None:  # the stored text with its BulkDataURIs rewritten
        return Response(
            _scoped_json(request, gzip.decompress(body)),
            media_type=DICOM_JSON,
            headers={"Vary": "Accept-Encoding"},
        )
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(
            body,
            media_type=DICOM_JSON,
            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
        )
    return Response(
        gzip.decompress(body), media_type=DICOM_JSON, headers={"Vary": "Accept-Encoding"}
    )


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata")
def instance_metadata(
    study: str,
    series: str,
    instance: str,
    form: MetadataForm,
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    view: ViewDep,
) -> Response:
    found = find_instance(db, view, study, series, instance)
    audit.record(db, principal, "dicom.metadata", object_type="dicomweb", object_id=instance)
    return _metadata(request, [found.dataset_json], form)


# --- WADO-RS: bulk data, rendered ---------------------------------------------------------


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}")
def retrieve_bulk(
    study: str,
    series: str,
    instance: str,
    tag: str,
    request: Request,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
) -> Response:
    found = find_instance(db, view, study, series, instance)
    audit.record(db, principal, "dicom.bulk", object_type="dicomweb", object_id=instance)
    if tag.upper() in ("7FE00010", "7FE00008", "7FE00009"):
        wanted = negotiate.choose_frames(
            negotiate.frame_choices(request.headers.get("accept")),
            found.frames_transfer_syntax_uid,
        )
        parts = wado.pixel_bulk_parts(store, found, wanted)
        return _multipart(parts, wado.parts_type(parts))
    body = wado.bulk_value(store, found, tag.upper())
    return _multipart([("application/octet-stream", body)], "application/octet-stream")


@dataclass(frozen=True)
class Rendering:
    """How to render frames: the query parameters of PS3.18 §8.3.5.1, parsed (and refused
    when malformed) before any frame is read."""

    window: render.Window | None
    viewport: tuple[int, int] | None
    quality: int
    size: int | None  # a thumbnail's longest side, when no viewport is given
    region: render.Region | None = None  # the part of the image shown (WADO-URI)

    @classmethod
    def of(cls, request: Request, *, size: int | None = None) -> Rendering:
        query = request.query_params
        return cls(
            window=render.parse_window(query.get("window")),
            viewport=render.parse_viewport(query.get("viewport")),
            quality=render.parse_quality(query.get("quality")),
            size=size,
        )

    def image(self, store: ObjectStore, instance: Instance, frame: int, media: str) -> bytes:
        pixel = pixel_of(instance)
        if pixel is None:
            raise BadRequest(f"instance {instance.sop_instance_uid} has no pixel data to render")
        stored = read_frames(store, instance, [frame])[0]
        syntax = instance.frames_transfer_syntax_uid
        native = wado.decoded(
            f"frame {frame} of instance {instance.sop_instance_uid}",
            syntax,
            lambda: frame_for_transfer_syntax(stored, syntax, EXPLICIT_VR_LITTLE_ENDIAN, pixel),
        )
        layout = decoded_description(pixel, syntax)  # the native frame's own layout
        array = render.to_array(native, layout)
        attributes = wado.rendering_attributes(store, instance)
        image = render.to_display(array, attributes, self.window, layout.photometric_interpretation)
        if self.region is not None:
            image = render.crop(image, self.region)
        if self.viewport is not None:
            image = render.fit(image, *self.viewport)
        elif self.size is not None:
            image = render.shrink(image, self.size)
        return render.encode(image, media, quality=self.quality)


def _render(
    request: Request, store: StoreDep, instance: Instance, frame: int, *, size: int | None
) -> Response:
    rendering = Rendering.of(request, size=size)
    media = negotiate.rendered_media_type(request.headers.get("accept"))
    return Response(
        rendering.image(store, instance, frame, media),
        media_type=media,
        headers={"Cache-Control": "private, max-age=3600"},
    )


def _render_all(
    request: Request,
    store: ObjectStore,
    images: list[Instance],
    what: str,
    *,
    frames: list[int] | None = None,
) -> StreamingResponse:
    """Every frame of `images` (or the `frames` of each), in order, rendered as the parts of
    one multipart body."""
    if not images:
        raise BadRequest(f"{what} has no images to render")
    if frames:  # checked before the body starts, as a missing frame cannot be said later
        for instance in images:
            count = max(instance.number_of_frames, 1)
            if max(frames) > count:
                raise InvalidQuery(
                    f"frame {max(frames)} does not exist: instance "
                    f"{instance.sop_instance_uid} has {count} frame(s), numbered from 1"
                )
    rendering = Rendering.of(request)
    media = negotiate.rendered_part_type(request.headers.get("accept"))
    for instance in images:  # checked now, before the body: and loaded, as the body
        pixel = pixel_of(instance)  # streams after the session is gone
        if pixel is not None:
            render.check_renderable(pixel)
        _ = instance.dataset_json

    def parts() -> Iterator[tuple[str, bytes]]:
        for instance in images:
            numbers = frames or range(1, max(instance.number_of_frames, 1) + 1)
            for frame in numbers:
                yield media, rendering.image(store, instance, frame, media)

    # The first image is made before the response starts: one that cannot be rendered is
    # refused with its status (all of a one-image series).
    made = parts()
    first = next(made)
    return _multipart(itertools.chain([first], made), media)


@router.get("/studies/{study}/rendered")
def study_rendered(
    study: str, request: Request, principal: PrincipalDep, db: DbDep, store: StoreDep,
    view: ViewDep,
) -> Response:  # fmt: skip
    """Every image of the study, series by series (PS3.18 §10.4.1.1.3, rendered study)."""
    all_series = series_of_studies(db, find_studies(db, view, study))
    instances = first_copies(i for found in all_series for i in instances_of(db, found.id))
    images = [i for i in instances if i.pixel]
    response = _render_all(request, store, images, f"study {study}")
    audit.record(db, principal, "dicom.rendered", object_type="dicomweb", object_id=study)
    return response


@router.get("/studies/{study}/series/{series}/rendered")
def series_rendered(
    study: str, series: str, request: Request, principal: PrincipalDep, db: DbDep,
    store: StoreDep, view: ViewDep,
) -> Response:  # fmt: skip
    """Every image of the series in instance order (PS3.18 §10.4.1.1.3, rendered series)."""
    copies = find_series_copies(db, view, study, series)
    instances = first_copies(i for copy in copies for i in instances_of(db, copy.id))
    images = [i for i in instances if i.pixel]
    response = _render_all(request, store, images, f"series {series}")
    audit.record(db, principal, "dicom.rendered", object_type="dicomweb", object_id=series)
    return response


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered")
@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered")
def rendered(
    study: str,
    series: str,
    instance: str,
    request: Request,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
    frames: str = "1",
) -> Response:
    """An image, or (of a frame list, PS3.18 §10.4.1.1.3) a multipart body of one per frame."""
    numbers = wado.parse_frame_list(frames)
    found = find_instance(db, view, study, series, instance)
    if len(numbers) == 1:
        return _render(request, store, found, numbers[0], size=None)
    return _render_all(request, store, [found], f"instance {instance}", frames=numbers)


@router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail")
@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail")
def instance_thumbnail(
    study: str,
    series: str,
    instance: str,
    request: Request,
    db: DbDep,
    store: StoreDep,
    view: ViewDep,
    frames: str = "1",
) -> Response:
    """One image that stands for the instance, or for its frame list (the first frame)."""
    numbers = wado.parse_frame_list(frames)
    found = find_instance(db, view, study, series, instance)
    return _render(request, store, found, numbers[0], size=render.THUMBNAIL_SIZE)


@router.get("/studies/{study}/series/{series}/thumbnail")
def series_thumbnail(
    study: str, series: str, request: Request, db: DbDep, store: StoreDep, view: ViewDep
) -> Response:
    found = find_series(db, view, study, series)
    images = [i for i in instances_of(db, found.id) if i.pixel]
    if not images:
        raise BadRequest(f"series {series} has no images to render")
    return _render(request, store, images[len(images) // 2], 1, size=render.THUMBNAIL_SIZE)


@router.get("/studies/{study}/thumbnail")
def study_thumbnail(
    study: str, request: Request, db: DbDep, store: StoreDep, view: ViewDep
) -> Response:
    """The middle image of the study's largest series that has images."""
    all_series = series_of_studies(db, find_studies(db, view, study))
    for found in sorted(all_series, key=lambda s: s.number_of_instances, reverse=True):
        images = [i for i in instances_of(db, found.id) if i.pixel]
        if images:
            return _render(request, store, images[len(images) // 2], 1, size=render.THUMBNAIL_SIZE)
    raise BadRequest(f"study {study} has no images to render")


# --- deletion -----------------------------------------------------------------------------


@router.delete("/studies/{study}", status_code=204)
def delete_study(
    study: str, principal: PrincipalDep, db: DbDep, store: StoreDep, view: ViewDep
) -> None:
    for found in find_studies(db, view, study):
        archives.get_archive(db, principal, found.archive_id, ArchiveRole.editor)
        deletion.delete_study(db, store, found)
    audit.record(db, principal, "dicom.delete", object_type="dicomweb", object_id=study)


@router.delete("/studies/{study}/series/{series}", status_code=204)
def delete_series(
    study: str, series: str, principal: PrincipalDep, db: DbDep, store: StoreDep, view: ViewDep
) -> None:
    # At /dicom-web, every visible copy goes (as with a study); the caller edits them all.
    copies = find_series_copies(db, view, study, series)
    for found in copies:
        archives.get_archive(db, principal, found.archive_id, ArchiveRole.editor)
    for found in copies:
        deletion.delete_series(db, store, found)
    audit.record(db, principal, "dicom.delete", object_type="dicomweb", object_id=series)


@router.delete("/studies/{study}/series/{series}/instances/{instance}", status_code=204)
def delete_instance(
    study: str, series: str, instance: str, principal: PrincipalDep, db: DbDep, store: StoreDep,
    view: ViewDep,
) -> None:  # fmt: skip
    """One instance; deleting the last one of a series deletes the series (and its study
    when that was the last series)."""
    copies = find_instance_copies(db, view, study, series, instance)
    for found in copies:
        archives.get_archive(db, principal, found.archive_id, ArchiveRole.editor)
    for found in copies:
        deletion.delete_instance(db, store, found)
    audit.record(db, principal, "dicom.delete", object_type="dicomweb", object_id=instance)
