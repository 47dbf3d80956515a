"""Sliding-window inference on a whole volume and turning network outputs into labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from monai.inferers.utils import sliding_window_inference

from voxelhub.segment.runtimes import Predictor

Activation = Literal["softmax", "sigmoid"]


@dataclass(frozen=True, kw_only=True)
class WindowSettings:
    """How a volume is tiled into patches: ROI (network layout), overlap and batch size.

    `mode` blends overlapping patches ("constant" averages, "gaussian" weights centres),
    as in MONAI's `SlidingWindowInferer`.
    """

    roi: tuple[int, int, int]
    overlap: float = 0.5
    sw_batch_size: int = 4
    mode: Literal["constant", "gaussian"] = "constant"


def sliding_window(
    volume: npt.NDArray[np.float32], predictor: Predictor, settings: WindowSettings
) -> torch.Tensor:
    """Network outputs (C_out, X, Y, Z) for a (C, X, Y, Z) volume, patch by patch."""
    inputs = torch.from_numpy(np.ascontiguousarray(volume))[None]
    with torch.inference_mode():
        output = sliding_window_inference(
            inputs,
            roi_size=settings.roi,
            sw_batch_size=settings.sw_batch_size,
            predictor=predictor,
            overlap=settings.overlap,
            mode=settings.mode,
        )
    assert isinstance(output, torch.Tensor)  # one predictor output, one tensor
    return output[0]


def activate(logits: torch.Tensor, activation: Activation) -> torch.Tensor:
    """Probabilities of (C, ...) logits."""
    if activation == "softmax":
        return torch.softmax(logits.float(), dim=0)
    return torch.sigmoid(logits.float())


def discretize(
    probabilities: npt.NDArray[np.floating] | torch.Tensor,
    activation: Activation,
    values: Sequence[int] | None = None,
) -> npt.NDArray[np.uint8]:
    """A label map from (C, ...) probabilities.

    softmax: the most probable channel's index. sigmoid (multi-label, e.g. nested tumour
    regions): each channel over 0.5 painted with `values[channel]` (channel + 1 by
    default), largest region first, so a voxel holds the most specific region it lies in.

    >>> p = np.array([[[0.2, 0.9]], [[0.8, 0.1]]])
    >>> discretize(p, "softmax").tolist(), discretize(p, "sigmoid").tolist()
    ([[1, 0]], [[2, 1]])
    """
    array = probabilities.numpy() if isinstance(probabilities, torch.Tensor) else probabilities
    if activation == "softmax":
        return np.asarray(np.argmax(array, axis=0), dtype=np.uint8)
    values = list(values) if values is not None else list(range(1, array.shape[0] + 1))
    masks = array > 0.5
    labels = np.zeros(array.shape[1:], dtype=np.uint8)
    for channel in sorted(range(array.shape[0]), key=lambda c: -int(masks[c].sum())):
        labels[masks[channel]] = values[channel]
    return np.asarray(labels, dtype=np.uint8)
