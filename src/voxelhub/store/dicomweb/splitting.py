"""An instance taken apart as the image store keeps it: BulkDataURIs and its content hash.

Importable without the database or the web stack, so the split worker processes
(`splitpool`) load only the DICOM code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from voxelhub.dicom.model import InstanceKeys, SplitInstance
from voxelhub.dicom.split import split_instance

_META_GROUP = "0002"


def bulkdata_uri(study: str, series: str, instance: str) -> Callable[[str], str]:
    """The BulkDataURI maker for one instance (a root-relative DICOMweb path)."""

    def uri(tag: str) -> str:
        return f"/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}"

    return uri


def content_hash(split: SplitInstance) -> str:
    """What identifies an object's content, independent of how it was sent (file meta)."""
    body = {k: v for k, v in split.dataset_json.items() if not k.startswith(_META_GROUP)}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode())
    for frame in split.frames:
        digest.update(frame)
    return digest.hexdigest()


def _uris(keys: InstanceKeys) -> Callable[[str], str]:
    return bulkdata_uri(keys.study_instance_uid, keys.series_instance_uid, keys.sop_instance_uid)


def split_for_store(body: bytes | bytearray | memoryview) -> SplitInstance:
    """`body` (a Part-10 file) validated and split, with the store's BulkDataURIs."""
    return split_instance(body, bulkdata_uri_for=_uris)
