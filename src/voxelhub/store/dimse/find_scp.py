"""C-FIND SCP: Patient Root and Study Root queries at every level, answered from the index."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from voxelhub.core.db import session_scope
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.runtime import Runtime
from voxelhub.store.dimse.common import (
    CANCELLED,
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    OUT_OF_RESOURCES,
    PENDING,
    PENDING_WITH_WARNING,
    SUCCESS,
    Peer,
    record,
    status,
)
from voxelhub.store.dimse.contexts import PATIENT_ROOT
from voxelhub.store.dimse.identifier import Identifier, IdentifierError, parse_identifier
from voxelhub.store.dimse.search import search

logger = logging.getLogger(__name__)

UTF8 = "ISO_IR 192"
RETRIEVE_AE_TITLE = "00080054"
FindResult = tuple[int | Dataset, Dataset | None]


class FindService:
    """The C-FIND handler of one DIMSE server."""

    def __init__(self, runtime: Runtime, archive_id: uuid.UUID, *, ae_title: str) -> None:
        self._runtime = runtime
        self._archive_id = archive_id
        self._ae_title = ae_title

    def handle(self, event: Event) -> Iterator[FindResult]:
        patient_root = str(event.request.AffectedSOPClassUID) in PATIENT_ROOT
        try:
            ident = parse_identifier(event.identifier, patient_root=patient_root)
        except IdentifierError as err:
            yield status(DATASET_DOES_NOT_MATCH, str(err), offending=err.offending), None
            return
        except Exception as err:  # an identifier pydicom cannot decode
            yield status(DATASET_DOES_NOT_MATCH, f"unreadable identifier: {err}"), None
            return
        url = self._runtime.database_url
        with session_scope(url) as db:
            record(db, "dimse.find", self._archive_id, Peer.of(event), level=ident.level,
                   keys={a.keyword: v for a, v in ident.filters.values()})  # fmt: skip
        try:
            yield from self._matches(event, ident)
        except VoxelhubError as err:
            yield status(CANNOT_UNDERSTAND, err.message), None
        except Exception as err:
            logger.error("C-FIND failed", exc_info=True)
            yield status(OUT_OF_RESOURCES, f"query failed: {type(err).__name__}"), None

    def _matches(self, event: Event, ident: Identifier) -> Iterator[FindResult]:
        with session_scope(self._runtime.database_url) as db:
            # Each match waits to be queued until the peer has read most of those before it
            # (`receiver.MAX_UNSENT`), so a C-CANCEL ends a long search soon.
            for item, unsupported in search(db, ident, self._archive_id):
                if event.is_cancelled:
                    yield CANCELLED, None
                    return
                code = PENDING_WITH_WARNING if unsupported else PENDING
                yield code, self._response(item, ident)
        yield SUCCESS, None

    def _response(self, item: dict[str, Any], ident: Identifier) -> Dataset:
        """The match with exactly the requested keys (empty where the index has no value)."""
        wanted = {
            tag: item[tag]
            for tag in ident.requested
            if tag in item and "BulkDataURI" not in item[tag]
        }
        ds = Dataset.from_json(wanted)
        for tag, vr in ident.requested.items():
            if int(tag, 16) not in ds:
                ds.add_new(int(tag, 16), vr, [] if vr == "SQ" else None)
        if RETRIEVE_AE_TITLE in ident.requested:
            ds.RetrieveAETitle = self._ae_title
        ds.QueryRetrieveLevel = ident.level
        ds.SpecificCharacterSet = UTF8
        return ds
