"""Segmentation inference: bundles, runtimes, sliding windows, metrics (pure compute).

The public API:

- `load_model(path, *, card=None, runtime="auto", device=None, threads=None,
  sw_batch_size=None)` →
  `SegmentationModel`: a MONAI bundle folder (run through MONAI's config machinery), or a
  TorchScript / ONNX network with a JSON model card (`voxelhub.segment.card`).
- `SegmentationModel.metadata` (`ModelMetadata`: name, version, modality, input roles,
  labels with SNOMED CT codes) and `SegmentationModel.predict(images)` → a uint8 label map
  (SimpleITK image) on the first input's grid; `images` are in role order or a mapping
  from role to image; inputs on other grids are resampled onto the first.
- `inputs.read_inputs(specs)` → `InputImage`s from DICOM series folders, NIfTI or MHA
  files (`role=path` names a role); `inputs.assign_roles(inputs, metadata)` picks which
  is which (modality and SeriesDescription rules) and refuses wrong modalities.
- `outputs.write_outputs(...)` writes the mask (MHA/NIfTI), volumes JSON and, for DICOM
  inputs, a DICOM SEG and a TID 1500 SR (`dicom_out`); `outputs.volumes_ml(labels,
  label_names)`.
- `metrics.evaluate(pred, truth, spacing)` (Dice, IoU, HD95, ASSD in mm);
  `choose.choose_runtime`; synthetic cases in `synthetic` (`ct_case`, `mr_brain_case`,
  `dicom_series`).

Runtimes: eager, torchscript, onnx (onnxruntime), compile (torch.compile), int8
(onnxruntime dynamic quantization); every one agrees with eager PyTorch to Dice ≥ 0.99
between label maps or `choose_runtime` does not pick it.

A MONAI bundle's config can execute arbitrary code; bundles uploaded by users run in the
platform's sandbox. This package just runs what it is given.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voxelhub.segment.errors import SegmentError
    from voxelhub.segment.labels import LabelInfo, coded_label
    from voxelhub.segment.loading import load_model
    from voxelhub.segment.model import InputRole, ModelMetadata, SegmentationModel
    from voxelhub.segment.runtimes import RUNTIMES

# The names above load on first use, so that `voxelhub --help` does not import torch.
_LAZY = {
    "SegmentError": "errors",
    "LabelInfo": "labels",
    "coded_label": "labels",
    "load_model": "loading",
    "InputRole": "model",
    "ModelMetadata": "model",
    "SegmentationModel": "model",
    "RUNTIMES": "runtimes",
}

__all__ = [
    "RUNTIMES",
    "InputRole",
    "LabelInfo",
    "ModelMetadata",
    "SegmentError",
    "SegmentationModel",
    "coded_label",
    "load_model",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"voxelhub.segment.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'voxelhub.segment' has no attribute {name!r}")
