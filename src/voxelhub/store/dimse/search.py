"""C-FIND matching on the index, one level at a time, through the QIDO-RS search code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from sqlalchemy.orm import Session

from voxelhub.store import qido
from voxelhub.store.attributes import INSTANCE_TAGS, SERIES_TAGS, STUDY_TAGS
from voxelhub.store.dimse.identifier import SERIES_COMPUTED, STUDY_COMPUTED, Identifier
from voxelhub.store.dimse.patients import search_patients

PAGE = 1_000
# The attributes each level's results carry from the index; others asked for are taken from
# a stored instance (IssuerOfPatientID at SERIES level, say).
_INDEXED = {
    "STUDY": frozenset(STUDY_TAGS),
    "SERIES": frozenset(SERIES_TAGS) | {"0020000D"},
    "IMAGE": frozenset(INSTANCE_TAGS) | {"0020000D", "0020000E"},
}
# Filled by the index or the handler, never from an instance's JSON: InstanceAvailability,
# RetrieveAETitle and the patient's related counts.
_COMPUTED = (
    STUDY_COMPUTED | SERIES_COMPUTED | {"00080056", "00080054", "00201200", "00201202", "00201204"}
)
_SEARCH = {
    "STUDY": qido.search_studies,
    "SERIES": qido.search_series,
    "IMAGE": qido.search_instances,
}


def search(
    db: Session, ident: Identifier, archive_id: uuid.UUID
) -> Iterator[tuple[dict[str, Any], bool]]:
    """Each match as DICOM JSON, with whether some match keys were not supported."""
    if ident.level == "PATIENT":
        yield from search_patients(db, ident, archive_id)
        return
    run = _SEARCH[ident.level]
    indexed = _INDEXED[ident.level]
    include = frozenset(t for t in ident.requested if t not in indexed and t not in _COMPUTED)
    offset = 0
    while True:
        query = qido.Query(dict(ident.filters), include, limit=PAGE, offset=offset)
        results = run(db, query, archives=None, scope=archive_id, base_url="")
        unsupported = bool(results.unsupported or ident.ignored)
        for item in results.items:
            yield item, unsupported
        if len(results.items) < PAGE:
            return
        offset += PAGE
