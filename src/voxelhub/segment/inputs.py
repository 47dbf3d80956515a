"""Reading a case's inputs (DICOM series folders, NIfTI, MHA) and matching them to roles.

A DICOM folder may hold several series (e.g. the T1, T1c, T2 and FLAIR of one MR study):
each becomes its own input, and `assign_roles` picks which is which by the model's role
rules (modality and SeriesDescription keywords), unless the user named the role
(`t1c=/path/to/series`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import SimpleITK
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.planes import is_enhanced
from voxelhub.dicom.volume import series_to_volume, slice_sources
from voxelhub.segment.errors import SegmentError
from voxelhub.segment.model import ModelMetadata, normalized_modality
from voxelhub.segment.seg_sources import can_reference, seg_sources

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")


@dataclass(frozen=True, eq=False)
class InputImage:
    """One input volume: its image, where it came from and, for DICOM, its source images.

    `datasets` are the series' instances a DICOM SEG of the image references (see
    `voxelhub.segment.seg_sources`): its single-frame slices in slice order, or its one
    Enhanced image. They are empty for files, and for a volume made of several Enhanced
    images, which a SEG cannot reference frame by frame.
    """

    image: SimpleITK.Image
    source: str
    role: str | None = None
    modality: str | None = None
    series_description: str = ""
    datasets: tuple[Dataset, ...] = ()

    @property
    def is_dicom(self) -> bool:
        return bool(self.datasets)

    def describe(self) -> str:
        dicom = self.is_dicom or self.modality is not None  # see `datasets`
        what = f"{self.modality or '?'} {self.series_description!r}" if dicom else "file"
        return f"{self.source} ({what})"


def parse_spec(spec: str | Path) -> tuple[str | None, Path]:
    """("t1c", path) from "t1c=path"; (None, path) from a plain path.

    >>> parse_spec("flair=/data/flair.nii.gz")
    ('flair', PosixPath('/data/flair.nii.gz'))
    """
    text = str(spec)
    role, sep, rest = text.partition("=")
    if sep and role and "/" not in role and not Path(text).exists():
        return role.strip().lower(), Path(rest)
    return None, Path(text)


def read_inputs(specs: Sequence[str | Path]) -> list[InputImage]:
    """Every input named by `specs` (paths or role=path); a folder may give several."""
    inputs: list[InputImage] = []
    for spec in specs:
        role, path = parse_spec(spec)
        found = read_path(path)
        if role is not None:
            if len(found) != 1:
                raise SegmentError(
                    f"holds {len(found)} series; {role}= needs exactly one. Give "
                    "the folder of one series.",
                    source=str(path),
                )
            found = [_with_role(found[0], role)]
        inputs.extend(found)
    return inputs


def read_path(path: Path) -> list[InputImage]:
    """The volumes at `path`: one image file, or the series of a DICOM folder."""
    if not path.exists():
        raise SegmentError("does not exist.", source=str(path))
    if path.is_dir():
        return read_dicom_folder(path)
    name = path.name.lower()
    if not name.endswith(IMAGE_SUFFIXES):
        try:
            return [_series_input(path, [dcmread(path)])]
        except InvalidDicomError as err:
            raise SegmentError(
                f"is not an image this reads; give a DICOM series folder or a "
                f"{', '.join(IMAGE_SUFFIXES)} file.",
                source=str(path),
            ) from err
    try:
        image = SimpleITK.ReadImage(str(path))
    except RuntimeError as err:
        raise SegmentError(
            f"cannot be read as an image: {str(err).strip().splitlines()[-1]}", source=str(path)
        ) from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:  # type: ignore[no-untyped-call]
        raise SegmentError(
            f"is {image.GetDimension()}D with {image.GetNumberOfComponentsPerPixel()}"  # type: ignore[no-untyped-call]
            " component(s); give one 3D greyscale volume per file.",
            source=str(path),
        )
    return [InputImage(image=image, source=str(path), series_description=path.name)]


def read_dicom_folder(folder: Path) -> list[InputImage]:
    """One input per image series found (recursively) in `folder`; other files are skipped."""
    groups: dict[str, list[Dataset]] = defaultdict(list)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError):
            logger.debug("skipping %s: not DICOM", path)
            continue
        if "PixelData" in ds and (int(ds.get("NumberOfFrames") or 1) == 1 or is_enhanced(ds)):
            groups[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    if not groups:
        raise SegmentError(
            "holds no single-frame or Enhanced DICOM image series.", source=str(folder)
        )
    source = str(folder)
    return [_series_input(Path(source), datasets) for datasets in groups.values()]


def _series_input(folder: Path, datasets: list[Dataset]) -> InputImage:
    first = datasets[0]
    description = str(first.get("SeriesDescription", ""))
    try:
        volume, geometry = series_to_volume(datasets)
    except DicomError as err:
        raise SegmentError(f"series {description!r}: {err.message}", source=str(folder)) from err
    image = SimpleITK.GetImageFromArray(volume)
    image.SetSpacing(geometry.spacing)  # type: ignore[no-untyped-call]
    image.SetOrigin(geometry.origin)  # type: ignore[no-untyped-call]
    image.SetDirection(geometry.direction)  # type: ignore[no-untyped-call]
    return InputImage(
        image=image,
        source=str(folder),
        modality=str(first.get("Modality", "")) or None,
        series_description=description,
        datasets=_seg_sources(datasets),
    )


def _seg_sources(datasets: list[Dataset]) -> tuple[Dataset, ...]:
    """The instances of `datasets` a SEG references, single-frame ones in slice order."""
    if not can_reference(datasets):
        # Frames of several Enhanced images: the volume is used as an image file would be.
        return ()
    return slice_sources(datasets).instances


def _with_role(item: InputImage, role: str) -> InputImage:
    return InputImage(
        image=item.image,
        source=item.source,
        role=role,
        modality=item.modality,
        series_description=item.series_description,
        datasets=item.datasets,
    )


def assign_roles(inputs: Sequence[InputImage], metadata: ModelMetadata) -> list[InputImage]:
    """The inputs in the model's role order, refusing wrong modalities and missing series.

    Named roles (role=path) are taken as given; the rest are matched by each role's rules;
    a model with one input takes the only input there is.
    """
    roles = metadata.inputs
    chosen: dict[str, InputImage] = {}
    for item in inputs:
        if item.role is not None:
            if item.role not in metadata.roles:
                raise SegmentError(
                    f"role {item.role!r} is not an input of this model; its "
                    f"inputs are {', '.join(metadata.roles)}.",
                    source=item.source,
                )
            chosen[item.role] = item
    free = [item for item in inputs if item.role is None]
    if len(roles) == 1 and not chosen and len(free) == 1:
        chosen[roles[0].role] = free[0]
        free = []
    for rule in roles:
        if rule.role in chosen:
            continue
        matching = [i for i in free if rule.matches(i.modality, i.series_description)]
        if matching:
            best = max(matching, key=lambda i: len(i.datasets))
            chosen[rule.role] = best
            free.remove(best)
    missing = [rule.role for rule in roles if rule.role not in chosen]
    if missing:
        available = "; ".join(i.describe() for i in inputs) or "none"
        raise SegmentError(
            f"model {metadata.name!r} needs series {', '.join(metadata.roles)}; "
            f"none found for {', '.join(missing)} (given: {available}). Name "
            "them as role=path."
        )
    ordered = [chosen[rule.role] for rule in roles]
    for item, rule in zip(ordered, roles, strict=True):
        _check_modality(item, rule.modality or metadata.modality, metadata.name)
    return ordered


def _check_modality(item: InputImage, expected: str | None, model: str) -> None:
    if not expected or not item.modality:
        return
    if normalized_modality(item.modality) != normalized_modality(expected):
        raise SegmentError(
            f"series {item.series_description!r} is {item.modality}, but model {model!r} "
            f"segments {normalized_modality(expected)} images. Give a "
            f"{normalized_modality(expected)} series.",
            source=item.source,
        )


@dataclass(frozen=True)
class SegLabels:
    """A DICOM SEG read as a label map: (z, y, x), segment number n as label n."""

    labels: npt.NDArray[np.uint8]
    names: tuple[str, ...]


def read_seg_labels(folder: Path, reference: InputImage) -> SegLabels | None:
    """The DICOM SEG in `folder` as labels on the grid of `reference`, the series it segments.

    None when `folder` holds no SEG. Frames the SEG leaves out (empty ones) are background;
    where segments overlap, the higher segment number wins. The SEG must reference the
    reference series: a SEG of another series is refused, naming both.
    """
    import highdicom as hd

    segs = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError, ValueError):
            continue
        if ds.get("Modality") == "SEG":
            segs.append(ds)
    if not segs:
        return None
    if len(segs) > 1:
        raise SegmentError(f"holds {len(segs)} DICOM SEG instances, not one.", source=str(folder))
    if not reference.is_dicom:
        raise SegmentError(
            "a DICOM SEG label needs its image as the DICOM series it references, not a file.",
            source=str(folder),
        )
    image_uid = str(reference.datasets[0].SeriesInstanceUID)
    referenced = {
        str(item.SeriesInstanceUID) for item in segs[0].get("ReferencedSeriesSequence", [])
    }
    if image_uid not in referenced:
        raise SegmentError(
            f"the SEG segments series {', '.join(sorted(referenced)) or '(none named)'}, not "
            f"the image series {image_uid}; give the SEG made on this image.",
            source=str(folder),
        )
    try:
        seg = hd.seg.Segmentation.from_dataset(segs[0])
        labels = seg_sources(reference.datasets).labels(seg)
    except (ValueError, KeyError, AttributeError) as err:
        raise SegmentError(
            f"the SEG cannot be read onto its series: {err}", source=str(folder)
        ) from err
    numbers = sorted(int(n) for n in seg.segment_numbers)
    names = tuple(str(seg.get_segment_description(n).SegmentLabel) for n in numbers)
    return SegLabels(labels, names)
