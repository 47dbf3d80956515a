"""Model cards: the JSON that says how to run a plain TorchScript or ONNX network.

A card names the inputs (roles), the labels, the output activation, the sliding window and
the preprocessing, in MONAI's conventions (the network sees (C, X, Y, Z) arrays reoriented
to `orientation` and resampled to `spacing`), so a network exported from a MONAI bundle
runs with the card that repeats its config::

    {"name": "spleen-ct", "version": "1.0", "modality": "CT",
     "inputs": [{"role": "ct", "modality": "CT"}],
     "labels": {"1": "spleen"}, "output": "softmax",
     "roi_size": [96, 96, 96], "overlap": 0.5, "sw_batch_size": 4,
     "spacing": [1.5, 1.5, 2.0], "orientation": "RAS",
     "intensity": {"window": [-57, 164]}}

`intensity` is either {"window": [low, high]} (scaled to 0..1 and clipped, like
`ScaleIntensityRanged`) or {"normalize": "nonzero"} (zero mean, unit variance per channel
over non-zero voxels, like `NormalizeIntensityd(nonzero=True, channel_wise=True)`).
A label is a name or {"name", "category": [value, scheme, meaning], "type": [...]}.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voxelhub.segment.errors import SegmentError
from voxelhub.segment.inference import Activation, WindowSettings
from voxelhub.segment.labels import LabelInfo, code_from_json, coded_label
from voxelhub.segment.model import InputRole, ModelMetadata


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CardInput(_Frozen):
    role: str = Field(min_length=1)
    modality: str | None = None
    description: str | None = None


class CardLabel(_Frozen):
    name: str = Field(min_length=1, max_length=64)
    category: list[str] | None = None
    type: list[str] | None = None


class Intensity(_Frozen):
    window: tuple[float, float] | None = None
    normalize: Literal["nonzero", "all"] | None = None
    clip: bool = True


class ModelCard(_Frozen):
    """A parsed model card (see the module's docstring for the format)."""

    name: str = Field(min_length=1)
    version: str = "1"
    description: str = ""
    modality: str | None = None
    model: str | None = None
    inputs: list[CardInput] = Field(min_length=1)
    labels: dict[int, str | CardLabel] = Field(min_length=1)
    output: Activation = "softmax"
    roi_size: tuple[int, int, int]
    overlap: float = Field(default=0.5, ge=0.0, lt=1.0)
    sw_batch_size: int = Field(default=4, ge=1)
    mode: Literal["constant", "gaussian"] = "constant"
    spacing: tuple[float, float, float] | None = None
    orientation: str | None = "RAS"
    intensity: Intensity | None = None

    @field_validator("labels")
    @classmethod
    def _label_values(cls, labels: dict[int, str | CardLabel]) -> dict[int, str | CardLabel]:
        for value in labels:
            if not 1 <= value <= 255:
                raise ValueError(f"label {value}: labels run from 1 to 255 (0 is background)")
        return labels

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            name=self.name,
            version=self.version,
            modality=self.modality,
            description=self.description,
            inputs=tuple(
                InputRole(
                    role=i.role, modality=i.modality or self.modality, description=i.description
                )
                for i in self.inputs
            ),
            labels=tuple(self._label(value, label) for value, label in sorted(self.labels.items())),
        )

    def window(self) -> WindowSettings:
        return WindowSettings(
            roi=self.roi_size,
            overlap=self.overlap,
            sw_batch_size=self.sw_batch_size,
            mode=self.mode,
        )

    @staticmethod
    def _label(value: int, label: str | CardLabel) -> LabelInfo:
        if isinstance(label, str):
            return coded_label(value, label)
        where = f"label {value}"
        return coded_label(
            value,
            label.name,
            category=code_from_json(label.category, where=where) if label.category else None,
            property_type=code_from_json(label.type, where=where) if label.type else None,
        )


def read_card(path: Path) -> ModelCard:
    """The card in `path`; a clear error naming the file and the key when it is wrong."""
    try:
        document = json.loads(path.read_text())
    except OSError as err:
        raise SegmentError(f"cannot read the model card: {err.strerror}", source=str(path)) from err
    except json.JSONDecodeError as err:
        raise SegmentError(
            f"not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})", source=str(path)
        ) from err
    try:
        card = ModelCard.model_validate(document)
        card.metadata()
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise SegmentError(
            f"key {key!r}: {first['msg']} ({err.error_count()} problem(s) in all)",
            source=str(path),
        ) from err
    except ValueError as err:
        raise SegmentError(str(err), source=str(path)) from err
    return card
