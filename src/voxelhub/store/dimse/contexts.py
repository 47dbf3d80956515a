"""The presentation contexts the DIMSE service accepts and proposes.

Storage contexts accept compressed syntaxes as they are, so a compressed instance is stored
without being decoded; they also accept the SCP role a C-GET requester asks for.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from pydicom import uid
from pynetdicom import AE, AllStoragePresentationContexts, build_context
from pynetdicom.presentation import PresentationContext

# SOP classes by UID: pynetdicom.sop_class makes its names at import time, unseen by mypy.
VERIFICATION = "1.2.840.10008.1.1"
PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"  # Storage Commitment Push Model
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP instance

UNCOMPRESSED_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
)
COMPRESSED_SYNTAXES: tuple[str, ...] = (
    uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1,
    uid.JPEGLSLossless, uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless, uid.JPEG2000, uid.JPEG2000MCLossless, uid.JPEG2000MC,
    uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K,
    uid.RLELossless,
    *uid.MPEGTransferSyntaxes,
)  # fmt: skip
STORAGE_SYNTAXES = UNCOMPRESSED_SYNTAXES + COMPRESSED_SYNTAXES

QR_FIND = (PATIENT_ROOT_FIND, STUDY_ROOT_FIND)
QR_GET = (PATIENT_ROOT_GET, STUDY_ROOT_GET)
QR_MOVE = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE)
PATIENT_ROOT = frozenset(
    {
        PATIENT_ROOT_FIND,
        PATIENT_ROOT_GET,
        PATIENT_ROOT_MOVE,
    }
)

# Retired storage SOP classes that old modalities and archives still send (PS3.6 Table A-1):
# accepted and kept like any other, so migrating an old archive loses nothing.
RETIRED_STORAGE_SOP_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.1.27",  # Stored Print Storage
    "1.2.840.10008.5.1.1.29",  # Hardcopy Grayscale Image Storage
    "1.2.840.10008.5.1.1.30",  # Hardcopy Color Image Storage
    "1.2.840.10008.5.1.4.1.1.3",  # Ultrasound Multi-frame Image Storage (retired)
    "1.2.840.10008.5.1.4.1.1.5",  # Nuclear Medicine Image Storage (retired)
    "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (retired)
    "1.2.840.10008.5.1.4.1.1.8",  # Standalone Overlay Storage
    "1.2.840.10008.5.1.4.1.1.9",  # Standalone Curve Storage
    "1.2.840.10008.5.1.4.1.1.9.1",  # Waveform Storage - Trial
    "1.2.840.10008.5.1.4.1.1.10",  # Standalone Modality LUT Storage
    "1.2.840.10008.5.1.4.1.1.11",  # Standalone VOI LUT Storage
    "1.2.840.10008.5.1.4.1.1.12.3",  # X-Ray Angiographic Bi-Plane Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1",  # VL Image Storage - Trial
    "1.2.840.10008.5.1.4.1.1.77.2",  # VL Multi-frame Image Storage - Trial
    "1.2.840.10008.5.1.4.1.1.88.1",  # Text SR Storage - Trial
    "1.2.840.10008.5.1.4.1.1.88.2",  # Audio SR Storage - Trial
    "1.2.840.10008.5.1.4.1.1.88.3",  # Detail SR Storage - Trial
    "1.2.840.10008.5.1.4.1.1.88.4",  # Comprehensive SR Storage - Trial
    "1.2.840.10008.5.1.4.1.1.129",  # Standalone PET Curve Storage
)
STORAGE_SOP_CLASSES: tuple[str, ...] = tuple(
    dict.fromkeys(
        [
            *(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts),
            *RETIRED_STORAGE_SOP_CLASSES,
        ]
    )
)


def add_supported_contexts(ae: AE) -> None:
    """Make `ae` accept verification, storage, storage commitment and query/retrieve as an
    acceptor."""
    ae.add_supported_context(VERIFICATION, [uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian])
    for sop_class in (*QR_FIND, *QR_GET, *QR_MOVE):
        ae.add_supported_context(sop_class, list(UNCOMPRESSED_SYNTAXES))
    ae.add_supported_context(
        STORAGE_COMMITMENT, [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian]
    )
    for sop_class in STORAGE_SOP_CLASSES:
        # A C-GET requester asks to be the storage SCP on its own association.
        ae.add_supported_context(sop_class, list(STORAGE_SYNTAXES), scu_role=True, scp_role=True)


def proposed_contexts(offers: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """One context per (SOP class, transfer syntax), so the peer's choice is visible."""
    return [build_context(sop_class, [syntax]) for sop_class, syntax in dict.fromkeys(offers)]


class _CheapCopy(PresentationContext):
    """A presentation context whose deep copy shares its UIDs (immutable strings).

    The association server deep-copies every supported context for each association it
    accepts; copying our thousands of storage contexts field by field re-validates every
    UID and costs a tenth of a second or more per association.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _CheapCopy:
        twin = copy.copy(self)
        twin._transfer_syntax = list(self._transfer_syntax)
        return twin


def cheap_to_copy(contexts: Iterable[PresentationContext]) -> list[PresentationContext]:
    """The same contexts, each copied per association without re-validating its UIDs."""
    made: list[PresentationContext] = []
    for context in contexts:
        twin = _CheapCopy.__new__(_CheapCopy)
        twin.__dict__.update(context.__dict__)
        twin._transfer_syntax = list(context._transfer_syntax)
        made.append(twin)
    return made
