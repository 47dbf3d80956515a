"""What a segmentation model is to the rest of the platform: metadata and `predict`.

Every model format (MONAI bundle, TorchScript or ONNX with a model card) is a
`SegmentationModel`: it says what it needs (`metadata`: modality, input roles, labels) and
turns co-registered input images into one label map on the first input's grid.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import SimpleITK

from voxelhub.segment.errors import SegmentError
from voxelhub.segment.geometry import coregister
from voxelhub.segment.labels import LabelInfo

# SeriesDescription keywords of common MR contrasts (searched without case).
DEFAULT_ROLE_PATTERNS = {
    "t1c": r"t1c|t1ce|t1.*(gd|gad|post|contrast|\+c)",
    "t1": r"t1(?!c|ce)(?!.*(gd|gad|post|contrast|\+c))",
    "t2": r"t2(?!.*flair)",
    "flair": r"flair",
    "ct": r".",
}


@dataclass(frozen=True, kw_only=True)
class InputRole:
    """One input a model takes (one channel): its role name and how to recognise its series.

    `modality` compares without case (MR and MRI are the same); `description` is a regular
    expression searched without case in the SeriesDescription (or a file's name).

    >>> InputRole(role="flair", modality="MR").pattern
    'flair'
    """

    role: str
    modality: str | None = None
    description: str | None = None

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as err:
            raise ValueError(
                f"Input {self.role!r}: description rule {self.description!r} is not a valid "
                f"regular expression: {err}."
            ) from err

    @property
    def pattern(self) -> str:
        return self.description or DEFAULT_ROLE_PATTERNS.get(
            self.role.lower(), re.escape(self.role)
        )

    def matches(self, modality: str | None, description: str) -> bool:
        if (
            self.modality
            and modality
            and normalized_modality(modality) != normalized_modality(self.modality)
        ):
            return False
        return re.search(self.pattern, description, re.IGNORECASE) is not None


def normalized_modality(modality: str) -> str:
    """DICOM's modality code for what models call it ("MRI" → "MR")."""
    upper = modality.strip().upper()
    return {"MRI": "MR", "CT SCAN": "CT", "PETCT": "PT", "PET": "PT"}.get(upper, upper)


@dataclass(frozen=True, kw_only=True)
class ModelMetadata:
    """What a model is and needs: name, version, modality, input roles, labels."""

    name: str
    version: str
    modality: str | None
    inputs: tuple[InputRole, ...]
    labels: tuple[LabelInfo, ...]
    description: str = ""
    extra: Mapping[str, object] = field(default_factory=dict)

    @property
    def label_names(self) -> dict[int, str]:
        return {label.value: label.name for label in self.labels}

    @property
    def roles(self) -> list[str]:
        return [role.role for role in self.inputs]


class SegmentationModel(ABC):
    """A loaded model; `predict` runs it on one case.

    `runtime` is the runtime actually used ("eager", "torchscript", "onnx", "compile",
    "int8"); with "auto" it is settled by `choose_runtime` on the first case.
    """

    metadata: ModelMetadata
    runtime: str

    def predict(
        self, images: Sequence[SimpleITK.Image] | Mapping[str, SimpleITK.Image]
    ) -> SimpleITK.Image:
        """The label map (uint8, 0 = background) of one case on its first input's grid.

        `images` are in the order of `metadata.inputs`, or a mapping from role to image.
        Inputs on other grids are resampled onto the first (they must overlap it).
        """
        ordered = self._ordered(images)
        aligned = coregister(ordered, self.metadata.roles)
        labels = self._segment(aligned)
        labels = SimpleITK.Cast(labels, SimpleITK.sitkUInt8)  # type: ignore[no-untyped-call]
        labels.CopyInformation(ordered[0])
        return labels  # type: ignore[no-any-return]

    @abstractmethod
    def _segment(self, images: list[SimpleITK.Image]) -> SimpleITK.Image:
        """The label map on the grid of `images[0]` (all images share that grid)."""

    def _ordered(
        self, images: Sequence[SimpleITK.Image] | Mapping[str, SimpleITK.Image]
    ) -> list[SimpleITK.Image]:
        roles = self.metadata.roles
        if isinstance(images, Mapping):
            missing = [role for role in roles if role not in images]
            if missing:
                raise SegmentError(
                    f"model {self.metadata.name!r} needs inputs {roles}; missing {missing}. "
                    "Give each as role=path."
                )
            return [images[role] for role in roles]
        if len(images) != len(roles):
            raise SegmentError(
                f"model {self.metadata.name!r} takes {len(roles)} input(s) ({', '.join(roles)}),"
                f" got {len(images)}."
            )
        return list(images)
