"""The outbox: reconstructed series written to a folder the hospital collects from.

One folder per series, named by its SeriesInstanceUID. It appears at once and complete: the
files are written into a hidden temporary folder beside it, flushed to disk, and the folder
is renamed into place, so a collector never sees half a series. Writing the same series
again replaces nothing (the first complete copy stays).
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from voxelhub.recon.errors import ReconError

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_series(outbox: Path, series_instance_uid: str, files: Iterable[Path]) -> Path:
    """Copy `files` into `outbox/<series_instance_uid>/` atomically; returns that folder."""
    if not _UID.match(series_instance_uid) or len(series_instance_uid) > 64:
        raise ReconError(f"{series_instance_uid!r} is not a DICOM UID; no outbox folder made")
    try:
        outbox.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReconError(
            f"the outbox {outbox} cannot be created ({err}); check the setting "
            "VOXELHUB_RECON_OUTBOX and the folder's permissions"
        ) from err
    final = outbox / series_instance_uid
    if final.exists():
        return final
    staging = outbox / f".{series_instance_uid}.{uuid.uuid4().hex}.tmp"
    try:
        staging.mkdir()
        for source in files:
            target = staging / source.name
            shutil.copyfile(source, target)
            with target.open("rb+") as handle:
                os.fsync(handle.fileno())
        _fsync_folder(staging)
        try:
            staging.rename(final)
        except OSError:
            if not final.exists():  # another writer's complete copy is as good as ours
                raise
        _fsync_folder(outbox)
    except OSError as err:
        raise ReconError(f"writing series {series_instance_uid} to {outbox} failed: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
