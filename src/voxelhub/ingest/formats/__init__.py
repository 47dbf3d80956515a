"""Image formats recognised by content, one small module each, listed in `FORMATS`.

>>> from pathlib import Path
>>> recognise(Path("scan.nii.gz")).format  # doctest: +SKIP
'nifti'

Order matters only for content that two sniffers could claim; none overlap today. A new
format is a module with a `FORMAT` object (see `base.ImageFormat`) added to the tuple.
"""

from __future__ import annotations

import logging
from pathlib import Path

from voxelhub.ingest.formats import dicom, kspace, metaimage, nifti, nrrd, tiff
from voxelhub.ingest.formats.base import HEAD_BYTES, ImageFormat, Recognition

logger = logging.getLogger(__name__)

FORMATS: tuple[ImageFormat, ...] = (
    dicom.FORMAT,
    nifti.FORMAT,
    nrrd.FORMAT,
    metaimage.FORMAT,
    tiff.FORMAT,
    kspace.FORMAT,
)
NAMES = ", ".join(f.name for f in FORMATS)

__all__ = ["FORMATS", "ImageFormat", "Recognition", "read_head", "recognise"]


def read_head(path: Path) -> bytes:
    with path.open("rb") as stream:
        return stream.read(HEAD_BYTES)


def recognise(path: Path) -> Recognition:
    """What the file at `path` is by its content, and whether its header is usable."""
    try:
        head = read_head(path)
    except OSError as err:
        return Recognition.bad(None, f"the file could not be read ({err.strerror})")
    if not head:
        return Recognition.bad(None, "the file is empty (0 bytes); was it cut off on the way?")
    for image_format in FORMATS:
        if not image_format.matches(head):
            continue
        try:
            return image_format.check(path, head)
        except Exception as err:  # a checker bug must not lose the other files
            logger.warning("checking %s as %s failed", path, image_format.name, exc_info=True)
            return Recognition.bad(image_format.name, f"the header could not be read ({err})")
    return Recognition.bad(
        None, f"the content is not a recognised image format ({NAMES}) nor a zip or tar archive"
    )
